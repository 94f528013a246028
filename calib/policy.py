"""Update policy for live runs: EWMA smoothing, clamps, deadband, cooldown (pure logic).

The policy never touches storage; `calib.live` reads the state, asks
`decide`, and records the run and the outcome in one transaction.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from calib.config import PolicyConfig
from calib.engine.result import CalibrationResult

FORCED_REASON = "Forced by user"


@dataclass(frozen=True, slots=True, kw_only=True)
class PolicyOutcome:
    """What the update policy decided for a live run."""

    decision: str  # "applied" | "skipped"
    reason: str
    smoothed_multiplier: float | None  # what would be / was applied, after smoothing and clamps
    smoothed_bands: dict[str, float] = field(default_factory=dict)
    ewma_multiplier: float | None = None  # smoothing state carried to the next live run
    ewma_bands: dict[str, float] = field(default_factory=dict)

    @property
    def apply(self) -> bool:
        return self.decision == "applied"


@dataclass(frozen=True, slots=True, kw_only=True)
class PolicyState:
    """What the policy needs to know about the past."""

    applied_global: float | None
    applied_bands: dict[str, float]
    last_applied_at: datetime | None
    prev_ewma: float | None  # EWMA after the previous non-failed live run
    prev_ewma_bands: dict[str, float]


def _smooth(rec: float, prev_ewma: float | None, applied: float, cfg: PolicyConfig) -> tuple[float, float]:
    ewma = rec if prev_ewma is None else cfg.ewma_alpha * rec + (1 - cfg.ewma_alpha) * prev_ewma
    target = min(max(ewma, cfg.min_multiplier), cfg.max_multiplier)
    step = min(max(target - applied, -cfg.max_step), cfg.max_step)
    return ewma, round(applied + step, 10)


def decide(result: CalibrationResult, state: PolicyState, cfg: PolicyConfig, now: datetime) -> PolicyOutcome:
    """Apply or skip a live run, with the reason a trader reads in the UI.

    Order: failed runs are never applied; otherwise smooth (EWMA over live
    recommendations, clamp to [min, max], at most `max_step` away from the
    applied value), then skip for too few samples, too large vMAE, a change
    inside the deadband, or an active cooldown; else apply.
    """
    if result.status == "failed":
        return PolicyOutcome(decision="skipped", reason=f"Run failed: {result.reason}", smoothed_multiplier=None,
                             ewma_multiplier=state.prev_ewma, ewma_bands=dict(state.prev_ewma_bands))
    gm = result.global_metrics
    # The engine keeps its current skew until the trader edits it: apply the multiplier
    # fitted with that skew (the joint fit's goes with a skew that is not applied).
    rec = gm.recommended_iv_multiplier_current_skew
    if rec is None:
        rec = gm.recommended_iv_multiplier
    if rec is None:
        return PolicyOutcome(decision="skipped", reason="No recommendation", smoothed_multiplier=None,
                             ewma_multiplier=state.prev_ewma, ewma_bands=dict(state.prev_ewma_bands))
    applied = state.applied_global if state.applied_global is not None else 1.0
    ewma, smoothed = _smooth(rec, state.prev_ewma, applied, cfg)
    ewma_bands: dict[str, float] = {}
    bands: dict[str, float] = {}
    for b in result.bands:
        if b.status != "ok":  # too few samples or failed its guardrail: never applied (issue 12)
            continue
        b_rec = b.recommended_iv_multiplier_current_skew
        if b_rec is None:
            b_rec = b.recommended_iv_multiplier
        if b_rec is None:
            continue
        b_applied = state.applied_bands.get(b.name, applied)
        ewma_bands[b.name], bands[b.name] = _smooth(b_rec, state.prev_ewma_bands.get(b.name), b_applied, cfg)

    def skip(reason: str, *, trusted: bool = True) -> PolicyOutcome:
        # A recommendation the policy does not trust (too few samples, too large vMAE)
        # must not move the smoothing state either: carry the previous EWMA forward.
        return PolicyOutcome(decision="skipped", reason=reason, smoothed_multiplier=smoothed,
                             smoothed_bands=bands,
                             ewma_multiplier=ewma if trusted else state.prev_ewma,
                             ewma_bands=ewma_bands if trusted else dict(state.prev_ewma_bands))

    if result.n_samples < cfg.min_samples:
        return skip(f"Too few samples ({result.n_samples} < {cfg.min_samples})", trusted=False)
    vmae = gm.at_recommended.vega_weighted_mae_pct
    if vmae is None or vmae > cfg.max_vega_mae_pct:
        shown = "n/a" if vmae is None else f"{vmae:.2f}"
        return skip(f"vMAE {shown}% above policy maximum {cfg.max_vega_mae_pct:g}%", trusted=False)
    delta = smoothed - applied
    band_moves = [abs(v - state.applied_bands.get(k, applied)) for k, v in bands.items()]
    if abs(delta) < cfg.deadband and all(m < cfg.deadband for m in band_moves) and state.applied_global is not None:
        return skip(f"Within deadband (|{delta:+.4f}| < {cfg.deadband:g})")
    if state.last_applied_at is not None:
        until = state.last_applied_at + timedelta(minutes=cfg.cooldown_minutes)
        if now < until:
            return skip(f"Cooldown until {until:%Y-%m-%d %H:%M}Z")
    return PolicyOutcome(decision="applied", reason=f"Policy: {applied:.4f} -> {smoothed:.4f} ({delta:+.4f})",
                         smoothed_multiplier=smoothed, smoothed_bands=bands, ewma_multiplier=ewma,
                         ewma_bands=ewma_bands)

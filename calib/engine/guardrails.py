"""Realism guardrails (SPEC section 4): an absurd calibration fails loudly.

Nothing unchecked is graded `ok`: a non-finite number, an unknown data-quality
status, too few samples or snapshots, and a band multiplier out of range all
fail the run with a reason that names the cause (issue 12).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Protocol

from calib._typing import STATUSES, Status
from calib.config import RealismThresholds

# SPEC section 4 defaults (RealismThresholds carries them; calib.toml [realism] overrides).
MIN_MULT = 0.7
MAX_MULT = 1.6
MAX_MAE = 400.0
MAX_VEGA_MAE = 200.0

BAND_OK = "ok"
BAND_TOO_FEW = "too_few_samples"  # reported, never applied, does not fail the run
BAND_FAILED = "failed"  # enough samples but out of range / at a bound / non-finite: fails the run


class BandLike(Protocol):
    """What the band check reads (BandMetrics has these fields)."""

    @property
    def name(self) -> str: ...
    @property
    def n_samples(self) -> int: ...
    @property
    def recommended_iv_multiplier(self) -> float | None: ...
    @property
    def recommended_iv_multiplier_current_skew(self) -> float | None: ...
    @property
    def at_bound(self) -> bool: ...


def _finite(x: object) -> bool:
    """A real finite number (numpy scalars included); False for None, NaN, inf, strings."""
    try:
        return math.isfinite(float(x))  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return False


def _range_problems(label: str, value: float | None, th: RealismThresholds) -> list[str]:
    if value is None:
        return [f"no {label} could be fitted"]
    if not _finite(value):
        return [f"{label} is not a finite number ({value!r})"]
    v = float(value)
    out = []
    if v < th.min_mult:
        out.append(f"{label} {v:.4f} < {th.min_mult:g}")
    if v > th.max_mult:
        out.append(f"{label} {v:.4f} > {th.max_mult:g}")
    return out


def _mult_problems(label: str, cs_label: str, m: float | None, m_cs: float | None, at_bound: bool,
                   th: RealismThresholds) -> list[str]:
    """One entry per fitted multiplier: its range problem, the current-skew value alongside, a bound."""
    main = _range_problems(label, m, th)
    cs = _range_problems(cs_label, m_cs, th) if m_cs is not None else []
    out: list[str] = []
    if main:
        shown = f"{float(m_cs):.4f}" if m_cs is not None and _finite(m_cs) else repr(m_cs)
        out.append("; ".join(main) + (f" (current skew {shown})" if cs else ""))
    else:
        out += cs
    if at_bound:
        if out:
            out[-1] += ", pinned at a search bound"
        else:
            out.append(f"{label} pinned at a search bound")
    return out


def band_problems(band: BandLike, th: RealismThresholds) -> tuple[str, list[str]]:
    """A band's guard status and what tripped (for too few samples: the note saying it is not applied).

    Both the fitted-skew and the current-skew multiplier are checked: the live
    policy applies the latter.
    """
    n = band.n_samples
    if not _finite(n) or int(n) < th.min_band_samples:
        shown = n if _finite(n) else repr(n)
        return BAND_TOO_FEW, [f"band {band.name} not applied: too few samples (n={shown} < {th.min_band_samples})"]
    tripped = _mult_problems(f"band {band.name} multiplier", f"band {band.name} current-skew multiplier",
                             band.recommended_iv_multiplier, band.recommended_iv_multiplier_current_skew,
                             bool(band.at_bound), th)
    return (BAND_FAILED if tripped else BAND_OK), tripped


def assess_calibration_realism(
    multiplier: float | None,
    mae_pct: float | None,
    vega_weighted_mae_pct: float | None,
    data_quality_status: str,
    *,
    at_bound: bool = False,
    data_quality_issues: list[str] | None = None,
    thresholds: RealismThresholds | None = None,
    n_samples: int | None = None,
    n_snapshots: int | None = None,
    source: str = "harvested",
    multiplier_current_skew: float | None = None,
    bands: Sequence[BandLike] = (),
    data_quality_reason: str | None = None,
) -> tuple[Status, str]:
    """Grade a calibration `ok` / `degraded` / `failed` with a reason.

    Rules, in order: an unknown data-quality status -> failed; data quality
    failed -> failed (naming `data_quality_reason`, the root cause, when
    given); fewer than `min_samples` quotes (`min_samples_live` for live
    runs) or, for harvested runs, fewer
    than `min_snapshots` snapshots) -> failed with only that cause. Then every
    tripped check is named with its value: the multiplier (and the current-skew
    multiplier the policy applies) missing, non-finite or outside
    [min_mult, max_mult], at a search bound, MAE / vMAE missing, non-finite or
    above its maximum (a None threshold disables that check), any band with
    at least `min_band_samples` quotes failing the same range checks.
    Otherwise data quality degraded -> degraded; else ok. Bands with too few
    samples never fail a run; the reason lists them as not applied.
    """
    th = thresholds or RealismThresholds()
    if data_quality_status not in STATUSES:
        return "failed", f"Unknown data-quality status {data_quality_status!r} (expected one of {', '.join(STATUSES)})"
    if data_quality_status == "failed":
        named = ", ".join(data_quality_issues) if data_quality_issues else "see data_quality.issues"
        if data_quality_reason:
            return "failed", f"Data quality failed ({named}): {data_quality_reason}"
        return "failed", f"Data quality failed ({named})"
    if n_samples is not None:
        need = th.min_samples_live if source == "live" else th.min_samples
        if not _finite(n_samples) or int(n_samples) < need:
            return "failed", f"Too few samples (n={n_samples} < {need})"
    if n_snapshots is not None and source == "harvested":
        if not _finite(n_snapshots) or int(n_snapshots) < th.min_snapshots:
            return "failed", f"Too few snapshots (n={n_snapshots} < {th.min_snapshots})"
    tripped = _mult_problems("multiplier", "current-skew multiplier", multiplier, multiplier_current_skew,
                             at_bound is True, th)
    if not isinstance(at_bound, bool):
        tripped.append(f"at_bound is not a boolean ({at_bound!r})")
    for label, value, limit in (("MAE", mae_pct, th.max_mae_pct), ("vMAE", vega_weighted_mae_pct, th.max_vega_mae_pct)):
        if limit is None:
            continue
        if value is None:
            tripped.append(f"{label} was not computed")
        elif not _finite(value):
            tripped.append(f"{label} is not a finite number ({value!r})")
        elif float(value) > limit:
            tripped.append(f"{label} {float(value):.1f}% > {limit:g}%")
    not_applied: list[str] = []
    for b in bands:
        status, problems = band_problems(b, th)
        (not_applied if status == BAND_TOO_FEW else tripped).extend(problems)
    if tripped:
        return "failed", "Unrealistic auto-calibration: " + "; ".join(tripped)
    note = ("; " + "; ".join(not_applied)) if not_applied else ""
    if data_quality_status == "degraded":
        cause = f" ({data_quality_reason})" if data_quality_reason else ""
        return "degraded", f"Data quality degraded{cause}; use with caution{note}"
    return "ok", "Calibration within thresholds" + note

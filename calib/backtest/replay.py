"""Policy replay: the steps' runs fed to `calib.policy.decide` in time order, as live runs are.

The state carried from step to step is what `calib.live.policy_state` reads
from the history file after each recorded live run: the applied values
(upserted on apply, bands merged), the last apply time, and the EWMA of the
newest non-failed run. Nothing here touches the store.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

from calib.config import PolicyConfig
from calib.engine.result import CalibrationResult
from calib.policy import PolicyOutcome, PolicyState, decide


@dataclass(frozen=True, slots=True, kw_only=True)
class ReplayStep:
    outcome: PolicyOutcome
    applied_multiplier: float  # global multiplier in force after the decision, for (as_of, as_of + horizon]
    applied_bands: dict[str, float] = field(default_factory=dict)


def initial_state(start_multiplier: float, band_names: Sequence[str]) -> PolicyState:
    """The applied state at the backtest's start: `start_multiplier` globally and in every band."""
    return PolicyState(applied_global=start_multiplier, applied_bands=dict.fromkeys(band_names, start_multiplier),
                       last_applied_at=None, prev_ewma=None, prev_ewma_bands={})


def replay_policy(runs: Sequence[tuple[datetime, CalibrationResult]], state: PolicyState,
                  policy: PolicyConfig) -> list[ReplayStep]:
    """Decide each run at its as-of time, carrying the state forward exactly as the live store does."""
    out: list[ReplayStep] = []
    for as_of, result in runs:
        outcome = decide(result, state, policy, as_of)
        applied, bands, last = state.applied_global, dict(state.applied_bands), state.last_applied_at
        if outcome.apply and outcome.smoothed_multiplier is not None:
            applied, last = outcome.smoothed_multiplier, as_of
            bands.update(outcome.smoothed_bands)
        ewma, ewma_bands = state.prev_ewma, state.prev_ewma_bands
        if result.status != "failed":  # policy_state reads the EWMA of the newest non-failed run
            ewma, ewma_bands = outcome.ewma_multiplier, dict(outcome.ewma_bands)
        state = PolicyState(applied_global=applied, applied_bands=bands, last_applied_at=last, prev_ewma=ewma,
                            prev_ewma_bands=ewma_bands)
        out.append(ReplayStep(outcome=outcome, applied_multiplier=applied if applied is not None else 1.0,
                              applied_bands=bands))
    return out

"""Walk-forward backtest of the update policy: calibrate, replay the policy, score out of sample.

Three stages. (1) Every step's window is calibrated, in parallel: the same
`run_historical_calibration_from_harvest` as `auto-calibrate --as-of t`.
(2) The runs are fed to the update policy in time order (`replay_policy`),
from the start multiplier. (3) Every step is scored in parallel on the
quotes of (t, t + horizon] at the multiplier the policy had applied, at the
static start multiplier and at the hindsight-best one. The engine only
changes where (1) and (3) run, never their inputs, so the rows are the same.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np

from calib.backtest.engine import open_engine
from calib.backtest.replay import initial_state, replay_policy
from calib.backtest.steps import (
    BacktestConfig,
    OosScore,
    calibrate_step,
    score_step,
    step_calibration,
)
from calib.config import CalibrationConfig
from calib.engine.result import CalibrationResult, clean_json
from calib.policy import PolicyOutcome

Progress = Callable[[str, int, int, float], None]  # (stage, done, total, seconds since the stage began)

STEP_FIELDS: tuple[str, ...] = (
    "as_of", "status", "reason", "recommended_iv_multiplier", "recommended_iv_multiplier_current_skew",
    "ci_low", "ci_high", "applied_multiplier", "decision", "decision_reason", "smoothed_multiplier",
    "oos_vmae_pct_policy", "oos_vmae_pct_static", "oos_vmae_pct_best", "oos_mae_pct_policy", "oos_mae_pct_static",
    "oos_mae_pct_best", "best_multiplier", "n_samples", "n_oos_samples", "vega_weighted_mae_pct",
)


@dataclass(frozen=True, slots=True, kw_only=True)
class BacktestResult:
    backtest_id: str
    created_at: datetime
    config: BacktestConfig
    steps: tuple[dict[str, Any], ...]  # one row per step, keys `STEP_FIELDS`
    summary: dict[str, Any]
    engine: str
    workers: int
    elapsed_s: float
    results: tuple[CalibrationResult, ...] = field(default=(), repr=False)  # the steps' runs (not stored)

    def to_dict(self) -> dict[str, Any]:
        """``{"steps": [...], "summary": {...}}`` (SPEC section 9), NaN as null."""
        return clean_json({"steps": list(self.steps), "summary": self.summary})


def score_task(config: CalibrationConfig, as_of: datetime, horizon: timedelta, policy_multiplier: float,
               static_multiplier: float) -> OosScore:
    """`score_step` with positional arguments (what the engines submit)."""
    return score_step(config, as_of, horizon, policy_multiplier=policy_multiplier,
                      static_multiplier=static_multiplier)


def run_backtest(config: BacktestConfig, *, cluster: str | None = None, workers: int | None = None,
                 progress: Progress | None = None, local_processes: bool = True) -> BacktestResult:
    """Run the backtest of `config` on the engine `cluster` names (see `open_engine`)."""
    t0 = time.perf_counter()
    times = config.as_of_times()
    cal = step_calibration(config)

    def tick(stage: str) -> Callable[[int, int], None] | None:
        if progress is None:
            return None
        t_stage = time.perf_counter()  # the ETA is this stage's pace, not the whole run's
        return lambda done, total: progress(stage, done, total, time.perf_counter() - t_stage)

    with open_engine(cluster, workers=workers, n_tasks=len(times), local_processes=local_processes) as engine:
        results: list[CalibrationResult] = engine.map(calibrate_step, [(cal, t) for t in times],
                                                      on_done=tick("calibrate"))
        replayed = replay_policy(list(zip(times, results, strict=True)),
                                 initial_state(config.start_multiplier, [b.name for b in cal.bands]), config.policy)
        scores: list[OosScore] = engine.map(
            score_task, [(cal, t, config.horizon, r.applied_multiplier, config.start_multiplier)
                         for t, r in zip(times, replayed, strict=True)], on_done=tick("score"))
        engine_name, n_workers = engine.name, engine.workers
    steps = tuple(_step_row(t, res, rep.outcome, rep.applied_multiplier, sc)
                  for t, res, rep, sc in zip(times, results, replayed, scores, strict=True))
    elapsed = time.perf_counter() - t0
    summary = summarize_steps(steps)
    summary.update(engine=engine_name, workers=n_workers, elapsed_s=elapsed, start_multiplier=config.start_multiplier)
    return BacktestResult(backtest_id=f"BT-{config.calibration.underlying}-{datetime.now(UTC):%Y%m%dT%H%M%SZ}-"
                                      f"{uuid.uuid4().hex[:6]}",
                          created_at=datetime.now(UTC), config=config, steps=steps, summary=summary,
                          engine=engine_name, workers=n_workers, elapsed_s=elapsed, results=tuple(results))


def _step_row(as_of: datetime, result: CalibrationResult, outcome: PolicyOutcome, applied: float,
              score: OosScore) -> dict[str, Any]:
    gm = result.global_metrics
    return {
        "as_of": as_of,
        "status": result.status,
        "reason": result.reason,
        "recommended_iv_multiplier": gm.recommended_iv_multiplier,
        "recommended_iv_multiplier_current_skew": gm.recommended_iv_multiplier_current_skew,
        "ci_low": gm.ci_low,
        "ci_high": gm.ci_high,
        "applied_multiplier": applied,
        "decision": outcome.decision,
        "decision_reason": outcome.reason,
        "smoothed_multiplier": outcome.smoothed_multiplier,
        "oos_vmae_pct_policy": score.policy.vega_weighted_mae_pct,
        "oos_vmae_pct_static": score.static.vega_weighted_mae_pct,
        "oos_vmae_pct_best": score.best.vega_weighted_mae_pct,
        "oos_mae_pct_policy": score.policy.mae_pct,
        "oos_mae_pct_static": score.static.mae_pct,
        "oos_mae_pct_best": score.best.mae_pct,
        "best_multiplier": score.best_multiplier,
        "n_samples": result.n_samples,
        "n_oos_samples": score.n_samples,
        "vega_weighted_mae_pct": gm.at_recommended.vega_weighted_mae_pct,
    }


def summarize_steps(steps: tuple[dict[str, Any], ...]) -> dict[str, Any]:
    """Means over the steps scored out of sample, improvement of policy over static, counts."""
    scored = [s for s in steps if all(s[f"oos_vmae_pct_{k}"] is not None for k in ("policy", "static", "best"))]

    def mean(key: str) -> float | None:
        return float(np.mean([s[key] for s in scored])) if scored else None

    pol, sta, best = (mean(f"oos_vmae_pct_{k}") for k in ("policy", "static", "best"))
    return {
        "mean_oos_vmae_pct_policy": pol,
        "mean_oos_vmae_pct_static": sta,
        "mean_oos_vmae_pct_best": best,
        "mean_oos_mae_pct_policy": mean("oos_mae_pct_policy"),
        "mean_oos_mae_pct_static": mean("oos_mae_pct_static"),
        "mean_oos_mae_pct_best": mean("oos_mae_pct_best"),
        "improvement_pct": (sta - pol) / sta * 100.0 if pol is not None and sta else None,
        "n_steps": len(steps),
        "n_failed": sum(s["status"] == "failed" for s in steps),
        "n_applied": sum(s["decision"] == "applied" for s in steps),
        "n_scored": len(scored),
    }

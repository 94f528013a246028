"""One backtest step: calibrate the window ending at `as_of`, score a multiplier out of sample.

Both functions are top-level and take only picklable arguments, so a local
process pool and Dask workers run the same code on the same inputs; workers
read the Parquet by path (the harvest sits on storage they share).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

import numpy as np

from calib.calibration import run_historical_calibration_from_harvest
from calib.config import CalibrationConfig, PolicyConfig
from calib.data.reader import find_harvest_files, max_rows, partition_groups, reading, scan_quotes
from calib.engine.metrics import ErrorMetrics, quote_errors, summarize
from calib.engine.model import model_inputs
from calib.engine.result import CalibrationResult
from calib.errors import InvalidInputError
from calib.numerics.optimize import minimize_bounded
from calib.stages import RvState, window_arrays

MAX_STEPS = 5000  # a backtest longer than this is a typo in --step
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(m|min|h|d|w)\s*$", re.IGNORECASE)
_UNIT_S = {"m": 60.0, "min": 60.0, "h": 3600.0, "d": 86400.0, "w": 7 * 86400.0}


def parse_duration(text: str, *, name: str) -> timedelta:
    """``"1d"``, ``"6h"``, ``"30m"``, ``"2w"`` -> timedelta; InvalidInputError naming `name` otherwise."""
    m = _DURATION.match(text or "")
    if not m or float(m.group(1)) <= 0:
        raise InvalidInputError(f"`{name}` must be a positive duration such as 1d, 6h, 30m or 2w; got {text!r}")
    return timedelta(seconds=float(m.group(1)) * _UNIT_S[m.group(2).lower()])


@dataclass(frozen=True, slots=True, kw_only=True)
class BacktestConfig:
    """A walk-forward backtest: as-of times ``start, start + step, ...`` before `end`.

    `calibration` is the auto-calibrate configuration of every step (its
    harvest root, DTE range, lookback, bands, skew, guardrails); each step sets
    the window end. `start_multiplier` is the applied state at `start` (global
    and every band) and the static benchmark.
    """

    calibration: CalibrationConfig
    start: datetime
    end: datetime
    step: timedelta
    horizon: timedelta = timedelta(days=1)
    start_multiplier: float = 1.0
    policy: PolicyConfig = field(default_factory=PolicyConfig)

    def __post_init__(self) -> None:
        if self.start.utcoffset() is None or self.end.utcoffset() is None:
            raise InvalidInputError("`--start` and `--end` must be UTC times (ISO-8601 with Z or an offset)")
        if self.end <= self.start:
            raise InvalidInputError(f"`--end` ({self.end:%Y-%m-%d %H:%M}Z) must be after `--start` "
                                    f"({self.start:%Y-%m-%d %H:%M}Z)")
        if self.step <= timedelta(0) or self.horizon <= timedelta(0):
            raise InvalidInputError("`--step` and `--horizon` must be positive durations")
        n_steps = (self.end - self.start) / self.step
        if n_steps > MAX_STEPS:
            raise InvalidInputError(f"{int(np.ceil(n_steps))} steps exceed the maximum of {MAX_STEPS}: "
                                    "use a larger `--step` or a shorter range")
        if self.start_multiplier <= 0:
            raise InvalidInputError(f"`--start-multiplier` must be positive; got {self.start_multiplier}")

    def as_of_times(self) -> list[datetime]:
        """Every as-of time t in [start, end) by `step`."""
        n = int(np.ceil((self.end - self.start) / self.step))
        times = [self.start + i * self.step for i in range(n)]
        return [t for t in times if t < self.end]


def calibrate_step(config: CalibrationConfig, as_of: datetime) -> CalibrationResult:
    """The auto-calibrate run of the window ending at `as_of` (`auto-calibrate --as-of`, guardrails included)."""
    cfg = replace(config, source="harvested", harvest=replace(config.harvest, start_time=None, end_time=as_of))
    return run_historical_calibration_from_harvest(cfg)


@dataclass(frozen=True, slots=True, kw_only=True)
class OosScore:
    """Errors on the quotes of (as_of, as_of + horizon] at the policy's, the static and the best multiplier."""

    n_samples: int
    policy: ErrorMetrics
    static: ErrorMetrics
    best: ErrorMetrics
    best_multiplier: float | None


def score_step(config: CalibrationConfig, as_of: datetime, horizon: timedelta, *, policy_multiplier: float,
               static_multiplier: float) -> OosScore:
    """Out-of-sample errors of the model in the global DTE range, with the current skew.

    The current skew is what the trader's engine runs (the policy applies the
    multiplier fitted with it), so all three multipliers are scored with it.
    The hindsight-best multiplier minimizes the vMAE of these very quotes
    (bounded Brent within the configured multiplier bounds).
    """
    h = config.harvest
    end = as_of + horizon
    hf = find_harvest_files(h.data_root, config.underlying, window_start=as_of, window_end=end, warmup=h.rv_warmup)
    rv = RvState(hf, {})
    files = hf.quote_files()
    chunks = (scan_quotes(hf, g) for g in partition_groups(files))
    with reading(hf):
        _, q = window_arrays(chunks, rv.lookup, config, has_mark_iv="mark_iv" in hf.columns_present,
                              capacity=max_rows(files))
    as_of_us = int(as_of.timestamp() * 1_000_000)
    dte = q.dte_days
    keep = (q.snapshot_us > as_of_us) & (dte >= config.min_dte) & (dte <= config.max_dte)  # strictly after as_of
    mi = model_inputs(q, np.flatnonzero(keep))
    empty = ErrorMetrics(n_samples=0, mae_pct=None, mae_vol_points=None, vega_weighted_mae_pct=None, bias_pct=None)
    if len(mi) == 0:
        return OosScore(n_samples=0, policy=empty, static=empty, best=empty, best_multiplier=None)
    anchors = np.asarray(config.skew.anchors_z, dtype=np.float64)
    current = np.asarray(config.skew.current_ratios, dtype=np.float64)

    def at(m: float) -> ErrorMetrics:
        return summarize(quote_errors(mi, m, anchors, current, config.skew.extrapolation), mi.vega_coin)

    def vmae(m: float) -> float:
        v = at(m).vega_weighted_mae_pct
        return float("inf") if v is None else v

    lo, hi = config.multiplier_bounds
    best_m = minimize_bounded(vmae, lo, hi, xatol=1e-5)
    return OosScore(n_samples=len(mi), policy=at(policy_multiplier), static=at(static_multiplier), best=at(best_m),
                    best_multiplier=best_m)


def step_calibration(config: BacktestConfig) -> CalibrationConfig:
    """The steps' calibration config: tested at the start multiplier, so every step is independent."""
    c = config.calibration
    return replace(c, source="harvested", multiplier_tested=config.start_multiplier,
                   harvest=replace(c.harvest, start_time=None, end_time=None))

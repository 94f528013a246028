"""`calib auto-calibrate` as a library call: tested multiplier from the store, calibrate, record.

The command line parses its options and calls `auto_calibrate`; the benchmark
times the same function in a fresh process, without the CLI framework.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path

from calib.config import CalibrationConfig, HarvestConfig, Settings
from calib.engine.result import CalibrationResult


@dataclass(frozen=True, slots=True, kw_only=True)
class AutoCalibrationRun:
    """A recorded auto-calibration and where its time went."""

    result: CalibrationResult
    applied_s: float  # reading the applied multiplier (the tested one) from the store
    calibration_s: float  # scan to result (`run_historical_calibration_from_harvest`)
    store_s: float  # recording the run


def auto_calibration_config(
    underlying: str,
    *,
    data_dir: Path,
    settings: Settings,
    as_of: datetime | None = None,
    lookback_days: float = 14.0,
    dte_min: float = 3.0,
    dte_max: float = 10.0,
    option_types: tuple[str, ...] = ("C", "P"),
    max_samples: int | None = None,
) -> CalibrationConfig:
    """The configuration `calib auto-calibrate` runs with (tested multiplier filled by `auto_calibrate`).

    Raises InvalidInputError on inconsistent options.
    """
    return settings.calibration_config(
        underlying, source="harvested", min_dte=dte_min, max_dte=dte_max, option_types=option_types,
        max_samples=max_samples, lookback_days=lookback_days, multiplier_tested=1.0,
        harvest=HarvestConfig(data_root=data_dir, end_time=as_of),
    )


def auto_calibrate(config: CalibrationConfig, db: Path, *,
                   progress: Callable[[str], None] | None = None) -> AutoCalibrationRun:
    """Calibrate at the applied global multiplier of `db` (1.0 if none) and record the graded run.

    Raises StoreError (history file: before any work when the run could not be recorded there),
    NoDataError / InvalidInputError (harvest, options). The file is opened twice: once read-only
    to check it and read the applied multiplier, once to record the run.
    """
    # Imported here: DuckDB (the store) and the engine load when a run needs them, not with the module.
    from calib.calibration import resolve_multiplier_tested, run_historical_calibration_from_harvest
    from calib.store.history import record_run

    t0 = time.perf_counter()
    config = resolve_multiplier_tested(replace(config, multiplier_tested=None), db, for_write=True)
    t1 = time.perf_counter()
    result = run_historical_calibration_from_harvest(config, progress=progress, db_path=db)
    t2 = time.perf_counter()
    record_run(db, result)
    return AutoCalibrationRun(result=result, applied_s=t1 - t0, calibration_s=t2 - t1,
                              store_s=time.perf_counter() - t2)

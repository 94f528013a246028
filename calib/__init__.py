"""calib: calibrate a synthetic RV_7d x multiplier x skew vol model against Deribit marks.

Public API (imported lazily so `calib --help` stays fast):

- `run_historical_calibration_from_harvest(config)` and `run_calibration_extended(config)`
  return a `CalibrationResult` through one engine;
- `assess_calibration_realism(...)` grades a calibration ok / degraded / failed;
- `CalibrationConfig`, `HarvestConfig`, `PolicyConfig`, `load_settings` configure it;
- `force_apply_latest(db, underlying)` is the Force-Apply Latest action;
- `calib.client.applied_multipliers(underlying, db=...)`, `latest_runs`, `get_run` are the
  read API for other processes (what `calib serve` answers over HTTP).
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

__all__ = [
    "MAX_MAE",
    "MAX_MULT",
    "MAX_VEGA_MAE",
    "MIN_MULT",
    "CalibrationConfig",
    "CalibrationResult",
    "HarvestConfig",
    "PolicyConfig",
    "assess_calibration_realism",
    "force_apply_latest",
    "load_settings",
    "run_calibration_extended",
    "run_historical_calibration_from_harvest",
]

_WHERE = {
    "CalibrationConfig": "calib.config",
    "HarvestConfig": "calib.config",
    "PolicyConfig": "calib.config",
    "load_settings": "calib.config",
    "CalibrationResult": "calib.engine.result",
    "assess_calibration_realism": "calib.engine.guardrails",
    "MIN_MULT": "calib.engine.guardrails",
    "MAX_MULT": "calib.engine.guardrails",
    "MAX_MAE": "calib.engine.guardrails",
    "MAX_VEGA_MAE": "calib.engine.guardrails",
    "run_historical_calibration_from_harvest": "calib.calibration",
    "run_calibration_extended": "calib.live",
    "force_apply_latest": "calib.live",
}


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(import_module(_WHERE[name]), name)
    raise AttributeError(f"module 'calib' has no attribute {name!r}")

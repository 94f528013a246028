"""Realism guardrails (SPEC section 4); the implementation lives in calib.engine.guardrails."""

from calib.engine.guardrails import (
    MAX_MAE,
    MAX_MULT,
    MAX_VEGA_MAE,
    MIN_MULT,
    assess_calibration_realism,
)

__all__ = ["MAX_MAE", "MAX_MULT", "MAX_VEGA_MAE", "MIN_MULT", "assess_calibration_realism"]

"""SPEC section 4 realism cases."""

from __future__ import annotations

from calib.config import RealismThresholds
from calib.engine.guardrails import assess_calibration_realism


def test_sane_run_is_ok() -> None:
    assert assess_calibration_realism(1.10, 8.0, 5.0, "ok") == ("ok", "Calibration within thresholds")


def test_low_multiplier_and_high_vmae_fail() -> None:
    status, reason = assess_calibration_realism(0.5, 60.0, 50.0, "ok")
    assert status == "failed"
    assert reason.startswith("Unrealistic auto-calibration: ")
    assert "multiplier 0.5000 < 0.7" in reason


def test_absurd_vmae_fails_with_value() -> None:
    status, reason = assess_calibration_realism(1.2, 300.0, 250.0, "ok")
    assert status == "failed"
    assert "vMAE 250.0% > 200%" in reason


def test_millions_of_percent_mae_fails() -> None:
    status, reason = assess_calibration_realism(1.0, 2.5e6, 10.0, "ok")
    assert status == "failed"
    assert "MAE 2500000.0% > 400%" in reason


def test_at_bound_fails_even_inside_range() -> None:
    status, reason = assess_calibration_realism(1.2, 5.0, 5.0, "ok", at_bound=True)
    assert status == "failed"
    assert "bound" in reason


def test_data_quality_failed_wins() -> None:
    status, reason = assess_calibration_realism(1.1, 5.0, 5.0, "failed", data_quality_issues=["marks_not_in_coin"])
    assert status == "failed"
    assert reason == "Data quality failed (marks_not_in_coin)"


def test_degraded_data_with_sane_numbers() -> None:
    assert assess_calibration_realism(1.1, 5.0, 5.0, "degraded") == (
        "degraded", "Data quality degraded; use with caution")


def test_none_skips_checks_and_thresholds_configurable() -> None:
    th = RealismThresholds(min_mult=0.5, max_mult=2.0, max_mae_pct=None, max_vega_mae_pct=None)
    assert assess_calibration_realism(1.9, 1e9, 1e9, "ok", thresholds=th)[0] == "ok"
    assert assess_calibration_realism(1.1, None, None, "ok")[0] == "ok"

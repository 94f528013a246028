"""SPEC section 4 realism cases."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from calib.config import RealismThresholds
from calib.engine.guardrails import (
    BAND_FAILED,
    BAND_OK,
    BAND_TOO_FEW,
    assess_calibration_realism,
    band_problems,
)
from calib.errors import InvalidInputError


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
    assert assess_calibration_realism(1.1, 5.0, 5.0, "degraded", data_quality_reason="rv_fallback: 3 snapshots")[1] \
        == "Data quality degraded (rv_fallback: 3 snapshots); use with caution"


def test_none_skips_checks_and_thresholds_configurable() -> None:
    th = RealismThresholds(min_mult=0.5, max_mult=2.0, max_mae_pct=None, max_vega_mae_pct=None)
    assert assess_calibration_realism(1.9, 1e9, 1e9, "ok", thresholds=th)[0] == "ok"
    assert assess_calibration_realism(1.9, None, None, "ok", thresholds=th)[0] == "ok"


def test_missing_metric_with_its_check_enabled_fails() -> None:
    # issue 12: an unchecked number is never graded ok
    status, reason = assess_calibration_realism(1.1, None, None, "ok")
    assert status == "failed"
    assert "MAE was not computed" in reason and "vMAE was not computed" in reason


# --- issue 12 defect 6: non-finite inputs and unknown statuses -----------------------------------

@pytest.mark.parametrize(("mult", "mae", "vmae", "what"), [
    (1.1, float("nan"), 5.0, "MAE is not a finite number"),
    (1.1, 5.0, float("nan"), "vMAE is not a finite number"),
    (np.float32("nan"), 5.0, 5.0, "multiplier is not a finite number"),
    (1.1, float("inf"), 5.0, "MAE is not a finite number"),
    (float("-inf"), 5.0, 5.0, "multiplier is not a finite number"),
])
def test_non_finite_inputs_fail(mult: float, mae: float, vmae: float, what: str) -> None:
    status, reason = assess_calibration_realism(mult, mae, vmae, "ok")
    assert status == "failed"
    assert what in reason


@pytest.mark.parametrize("dq", ["FAILED", "OK", "", "bogus"])
def test_unknown_data_quality_status_fails(dq: str) -> None:
    status, reason = assess_calibration_realism(1.1, 5.0, 5.0, dq)
    assert status == "failed"
    assert reason.startswith("Unknown data-quality status") and repr(dq) in reason


def test_non_finite_thresholds_are_rejected() -> None:
    for kw in ({"min_mult": float("nan")}, {"max_mae_pct": float("inf")}, {"min_mult": 2.0},
               {"min_samples": -1}, {"max_chain_age_minutes": 0.0}):
        with pytest.raises(InvalidInputError):
            RealismThresholds(**kw)  # type: ignore[arg-type]


_anything = st.one_of(
    st.none(), st.floats(allow_nan=True, allow_infinity=True, width=64),
    st.floats(allow_nan=True, allow_infinity=True, width=32).map(np.float32),
    st.floats(min_value=0.0, max_value=3.0),
)


@given(mult=_anything, mult_cs=_anything, mae=_anything, vmae=_anything,
       dq=st.sampled_from(["ok", "degraded", "failed", "FAILED", "Ok", ""]),
       at_bound=st.booleans(), n=st.one_of(st.none(), st.integers(-5, 5000)),
       snaps=st.one_of(st.none(), st.integers(0, 20)), band_m=_anything, band_n=st.integers(0, 5000))
def test_never_ok_unless_every_input_finite_and_in_range(mult, mult_cs, mae, vmae, dq, at_bound, n, snaps,  # type: ignore[no-untyped-def]
                                                         band_m, band_n) -> None:
    th = RealismThresholds()
    band = _Band(name="monthly", n_samples=band_n, recommended_iv_multiplier=band_m,
                 recommended_iv_multiplier_current_skew=None, at_bound=False)
    status, _ = assess_calibration_realism(mult, mae, vmae, dq, at_bound=at_bound, thresholds=th, n_samples=n,
                                           n_snapshots=snaps, multiplier_current_skew=mult_cs, bands=[band])

    def in_range(x: object) -> bool:
        return x is not None and math.isfinite(float(x)) and th.min_mult <= float(x) <= th.max_mult  # type: ignore[arg-type]

    def below(x: object, cap: float | None) -> bool:
        return x is not None and math.isfinite(float(x)) and (cap is None or float(x) <= cap)  # type: ignore[arg-type]

    every_input_fine = (
        dq == "ok" and in_range(mult) and (mult_cs is None or in_range(mult_cs)) and not at_bound
        and below(mae, th.max_mae_pct) and below(vmae, th.max_vega_mae_pct)
        and (n is None or n >= th.min_samples) and (snaps is None or snaps >= th.min_snapshots)
        and (band_n < th.min_band_samples or in_range(band_m))
    )
    if status == "ok":
        assert every_input_fine
    if every_input_fine:
        assert status == "ok"


# --- issue 12 defect 7: minimum samples and snapshots ---------------------------------------------

def test_too_few_samples_is_the_reason_not_the_bound() -> None:
    status, reason = assess_calibration_realism(0.25, 90.0, 80.0, "ok", at_bound=True, n_samples=44, n_snapshots=10)
    assert (status, reason) == ("failed", "Too few samples (n=44 < 200)")


def test_too_few_snapshots_for_harvested_runs_only() -> None:
    assert assess_calibration_realism(1.1, 5.0, 5.0, "ok", n_samples=900, n_snapshots=1) == (
        "failed", "Too few snapshots (n=1 < 3)")
    # a live run is one chain
    assert assess_calibration_realism(1.1, 5.0, 5.0, "ok", n_samples=900, n_snapshots=1, source="live")[0] == "ok"
    th = RealismThresholds(min_samples=10, min_snapshots=1)
    assert assess_calibration_realism(1.1, 5.0, 5.0, "ok", n_samples=44, n_snapshots=1, thresholds=th)[0] == "ok"


# --- issue 12 defect 5: band multipliers are guarded ----------------------------------------------

@dataclass(frozen=True)
class _Band:
    name: str
    n_samples: int
    recommended_iv_multiplier: float | None
    recommended_iv_multiplier_current_skew: float | None
    at_bound: bool


def test_band_out_of_range_fails_naming_band_and_value() -> None:
    bands = [_Band(name="weekly", n_samples=5000, recommended_iv_multiplier=1.2,
                   recommended_iv_multiplier_current_skew=1.21, at_bound=False),
             _Band(name="monthly", n_samples=3000, recommended_iv_multiplier=1.658,
                   recommended_iv_multiplier_current_skew=1.5, at_bound=False),
             _Band(name="quarterly", n_samples=2000, recommended_iv_multiplier=1.5,
                   recommended_iv_multiplier_current_skew=1.767, at_bound=False)]
    status, reason = assess_calibration_realism(1.2, 5.0, 5.0, "degraded", bands=bands)
    assert status == "failed"
    assert "band monthly multiplier 1.6580 > 1.6" in reason
    assert "band quarterly current-skew multiplier 1.7670 > 1.6" in reason
    assert "weekly" not in reason


def test_band_at_bound_fails_and_band_with_few_samples_is_reported_not_failed() -> None:
    pinned = _Band(name="monthly", n_samples=500, recommended_iv_multiplier=1.2,
                   recommended_iv_multiplier_current_skew=None, at_bound=True)
    assert band_problems(pinned, RealismThresholds())[0] == BAND_FAILED
    few = _Band(name="quarterly", n_samples=12, recommended_iv_multiplier=3.9,
                recommended_iv_multiplier_current_skew=3.9, at_bound=True)
    status, problems = band_problems(few, RealismThresholds())
    assert status == BAND_TOO_FEW
    assert problems == ["band quarterly not applied: too few samples (n=12 < 100)"]
    status, reason = assess_calibration_realism(1.2, 5.0, 5.0, "ok", bands=[few])
    assert status == "ok"
    assert reason == "Calibration within thresholds; band quarterly not applied: too few samples (n=12 < 100)"
    fine = _Band(name="weekly", n_samples=500, recommended_iv_multiplier=1.2,
                 recommended_iv_multiplier_current_skew=1.19, at_bound=False)
    assert band_problems(fine, RealismThresholds()) == (BAND_OK, [])

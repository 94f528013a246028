"""Implied-vol inversion: round trips on a wide grid, deep OTM, named failures."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from calib.numerics.black76 import black76_price_coin, intrinsic_coin
from calib.numerics.implied_vol import (
    IV_ABOVE_MAX,
    IV_BAD_INPUT,
    IV_BELOW_INTRINSIC,
    IV_OK,
    implied_vol,
)


@given(
    st.floats(1_000, 200_000),
    st.floats(-2.0, 2.0),
    st.floats(1 / 365 / 24, 3.0),
    st.floats(0.05, 4.0),
    st.booleans(),
)
@settings(max_examples=500, deadline=None)
def test_round_trip(f: float, lk: float, t: float, v: float, call: bool) -> None:
    k = f * np.exp(lk)
    p = black76_price_coin(f, k, t, v, call)
    time_value = p - intrinsic_coin(f, k, call)
    # Only quotes whose time value survives float64 carry the vol; others are ill-posed.
    if p < 1e-4 or time_value < 1e-8:
        return
    iv, reason = implied_vol(p, f, k, t, call)
    assert reason == IV_OK
    tol = 1e-8 if time_value >= 0.999 * p else 1e-6
    assert iv == pytest.approx(v, abs=tol)


def test_grid_no_nan_above_min_tick_and_tight_error() -> None:
    f = 60_000.0
    lk, t, v = np.meshgrid(np.linspace(-1.5, 1.5, 61), np.geomspace(1 / 365 / 24, 2, 40), np.linspace(0.1, 3, 30))
    k = f * np.exp(lk.ravel())
    t, v = t.ravel(), v.ravel()
    for call in (True, False):
        p = black76_price_coin(f, k, t, v, call)
        otm = (k >= f) if call else (k <= f)
        sel = otm & (p > 1e-4)
        iv, reason = implied_vol(p[sel], f, k[sel], t[sel], call)
        assert np.all(reason == IV_OK)
        assert np.max(np.abs(iv - v[sel])) < 1e-8


def test_deep_otm_tiny_prices_converge() -> None:
    f, t = 60_000.0, 7 / 365
    k = f * np.array([1.5, 2.0, 3.0])
    v = np.array([0.6, 0.9, 1.4])
    p = black76_price_coin(f, k, t, v, True)
    iv, reason = implied_vol(p, f, k, t, True)
    assert np.all(reason == IV_OK)
    assert np.allclose(iv, v, atol=1e-8)


def test_named_failures() -> None:
    f = 100.0
    iv, reason = implied_vol(
        np.array([0.05, 1.5, 0.1, np.nan]),
        f,
        np.array([90.0, 100.0, 100.0, 100.0]),
        np.array([0.1, 0.1, -1.0, 0.1]),
        True,
    )
    assert reason.tolist() == [IV_BELOW_INTRINSIC, IV_ABOVE_MAX, IV_BAD_INPUT, IV_BAD_INPUT]
    assert np.isnan(iv).all()

"""Trailing RV: unbiased on GBM, no look-ahead, gaps, warm-up."""

from __future__ import annotations

import numpy as np
import pytest

from calib.numerics.realized_vol import trailing_realized_vol


def _gbm(n: int, step_s: float, vol: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    dt = step_s / (365 * 86400)
    ts = np.arange(n) * step_s
    px = 60_000 * np.exp(np.cumsum(rng.normal(0, vol * np.sqrt(dt), n)))
    return ts.astype(float), px


def test_recovers_constant_vol() -> None:
    ts, px = _gbm(14 * 288, 300.0, 0.6)
    rv, span = trailing_realized_vol(ts, px)
    assert rv[-1] == pytest.approx(0.6, rel=0.05)
    assert span[-1] == pytest.approx(7 * 86400, abs=300)


def test_no_look_ahead() -> None:
    ts, px = _gbm(3000, 300.0, 0.5)
    rv, _ = trailing_realized_vol(ts, px)
    px2 = px.copy()
    px2[2000:] *= 1.5  # a jump in the future
    rv2, _ = trailing_realized_vol(ts, px2)
    assert np.array_equal(rv[:2000], rv2[:2000], equal_nan=True)
    assert rv2[2000] > rv[2000]


def test_short_history_is_nan() -> None:
    ts, px = _gbm(100, 300.0, 0.5)
    rv, _ = trailing_realized_vol(ts, px, min_span_seconds=86400.0)
    assert np.isnan(rv).all()


def test_gap_keeps_estimate_unbiased() -> None:
    ts, px = _gbm(14 * 288, 300.0, 0.6, seed=4)
    keep = np.ones(ts.size, dtype=bool)
    keep[10 * 288 : 11 * 288] = False  # a one-day harvester outage
    rv, _ = trailing_realized_vol(ts[keep], px[keep])
    assert rv[-1] == pytest.approx(0.6, rel=0.08)

"""The numpy port of Cephes ndtr against scipy's own, tails included."""

from __future__ import annotations

import math

import numpy as np
from hypothesis import given
from hypothesis import strategies as st
from scipy.special import ndtr

from calib.numerics.normal import norm_cdf


def test_matches_scipy_to_a_few_ulp_over_the_whole_range() -> None:
    rng = np.random.default_rng(3)
    x = np.concatenate([np.linspace(-37.5, 37.5, 150_001), rng.normal(size=200_000) * 5,
                        [-1 / math.sqrt(2), 1 / math.sqrt(2), -math.sqrt(2), math.sqrt(2), -11.3137, 11.3137]])
    ours, ref = norm_cdf(x), ndtr(x)
    rel = np.abs(ours - ref) / ref
    assert rel.max() < 2e-15
    # The lower tail keeps its digits (no cancellation against 1).
    assert abs(float(norm_cdf(-30.0)) / ndtr(-30.0) - 1.0) < 1e-15


def test_special_values_and_shapes() -> None:
    out = norm_cdf(np.array([np.nan, np.inf, -np.inf, 0.0, -0.0, 1e300, -1e300]))
    assert np.isnan(out[0])
    assert out[1:].tolist() == [1.0, 0.0, 0.5, 0.5, 1.0, 0.0]
    assert norm_cdf(0.3).shape == ()
    assert abs(float(norm_cdf(0.3)) - ndtr(0.3)) <= 1e-16
    assert norm_cdf(np.zeros((2, 3))).shape == (2, 3)


@given(st.floats(min_value=-30.0, max_value=30.0, allow_nan=False))
def test_symmetry_and_monotone(x: float) -> None:
    a, b = float(norm_cdf(x)), float(norm_cdf(-x))
    assert abs(a + b - 1.0) <= 2e-16
    assert float(norm_cdf(x + 1e-3)) >= a

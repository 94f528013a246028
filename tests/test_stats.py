"""`calib.numerics.stats.median` against numpy's."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from calib.numerics.stats import median


@given(st.lists(st.floats(min_value=-1e6, max_value=1e6, allow_nan=False), min_size=1, max_size=60))
def test_equals_numpy_median(xs: list[float]) -> None:
    assert median(np.array(xs)) == float(np.median(np.array(xs)))


def test_nan_and_empty() -> None:
    assert math.isnan(median(np.array([1.0, np.nan, 3.0])))
    with pytest.raises(ValueError, match="empty"):
        median(np.array([]))


@given(st.lists(st.integers(min_value=-5, max_value=5), max_size=50))
def test_distinct_equals_numpy_unique(xs: list[int]) -> None:
    from calib.numerics.stats import distinct

    a = np.array(xs, dtype=np.int64)
    np.testing.assert_array_equal(distinct(a), np.unique(a))

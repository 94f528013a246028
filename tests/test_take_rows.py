"""`_take_rows`: usable rows copied out of multi-chunk polars columns without rechunking."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from calib.stages.quotes import _take_rows


@settings(max_examples=60, deadline=None)
@given(parts=st.lists(st.integers(0, 40), min_size=1, max_size=6), keep=st.floats(0.0, 1.0), seed=st.integers(0, 99))
def test_equals_fancy_indexing_on_the_concatenated_column(parts: list[int], keep: float, seed: int) -> None:
    rng = np.random.default_rng(seed)
    arrays = [rng.normal(size=n) for n in parts]
    column = pl.concat([pl.Series("x", a) for a in arrays], rechunk=False)
    full = np.concatenate(arrays)
    rows = np.flatnonzero(rng.random(full.size) < keep)
    out = np.full(rows.size, np.nan)
    _take_rows(column, rows, out)
    np.testing.assert_array_equal(out, full[rows])


@pytest.mark.parametrize("chunks", [1, 3])
def test_booleans(chunks: int) -> None:
    values = np.arange(30) % 3 == 0
    column = pl.concat([pl.Series("b", v) for v in np.array_split(values, chunks)], rechunk=False)
    assert column.n_chunks() == chunks
    rows = np.array([0, 1, 3, 11, 12, 29])
    out = np.zeros(rows.size, bool)
    _take_rows(column, rows, out)
    np.testing.assert_array_equal(out, values[rows])

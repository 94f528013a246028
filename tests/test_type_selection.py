"""`option_type_not_selected` without `is_in`: the same rows for any type list and any (also null) type."""

from __future__ import annotations

import polars as pl
from hypothesis import given, settings
from hypothesis import strategies as st

from calib.data.quality import _selected_type

TYPES = st.sampled_from(["C", "P", "X", "c", ""])


@settings(max_examples=80, deadline=None)
@given(values=st.lists(st.one_of(st.none(), TYPES), min_size=1, max_size=30),
       selected=st.lists(TYPES, max_size=4))
def test_equals_is_in(values: list[str | None], selected: list[str]) -> None:
    df = pl.DataFrame({"option_type": pl.Series(values, dtype=pl.String)}).with_columns(
        (pl.col("option_type") == "C").fill_null(False).alias("is_call"))
    got = df.with_columns(_selected_type(tuple(selected)).fill_null(False).alias("got"))["got"]
    want = df.select(pl.col("option_type").is_in(selected).fill_null(False))["option_type"]
    # Null types differ only in ways the earlier `unparsable_instrument` rule hides; compare the rest.
    known = df["option_type"].is_not_null()
    assert got.filter(known).to_list() == want.filter(known).to_list()

"""The per-snapshot index series: one-row-per-run fast path, and the exact median when data breaks its assumptions."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import numpy as np
import polars as pl

from calib.data.layout import atomic_write_parquet
from calib.data.reader import find_harvest_files, read_index_series
from tests.synth import END


def _files(root: Path) -> list[Path]:
    return sorted((root / "BTC").rglob("*.parquet"))


def _series(root: Path) -> pl.DataFrame:
    hf = find_harvest_files(root, "BTC", window_start=END - timedelta(days=3), window_end=END)
    return read_index_series(hf)


def test_constant_index_per_snapshot_gives_that_index(exact_harvest: Path) -> None:
    raw = pl.concat([pl.read_parquet(f) for f in _files(exact_harvest)])
    want = raw.group_by("snapshot_ts").agg(pl.col("index_price").first()).sort("snapshot_ts")
    got = _series(exact_harvest)
    assert got["index_source"].unique().to_list() == ["index_price"]
    joined = got.join(want.with_columns(pl.col("snapshot_ts").dt.cast_time_unit("us")), on="snapshot_ts")
    assert joined.height == got.height > 0
    np.testing.assert_array_equal(joined["index_usd"].to_numpy(), joined["index_price"].to_numpy())


def test_varying_and_invalid_index_inside_a_snapshot_take_the_median_of_positive_values(exact_harvest: Path) -> None:
    f = _files(exact_harvest)[-1]
    df = pl.read_parquet(f)
    first_ts = df["snapshot_ts"].min()
    n = int((df["snapshot_ts"] == first_ts).sum())
    # One snapshot gets prices 100, 101, ..., plus a zero and a NaN that must be ignored.
    prices = np.arange(100.0, 100.0 + n)
    prices[0], prices[1] = 0.0, np.nan
    df = df.with_columns(pl.when(pl.col("snapshot_ts") == first_ts)
                         .then(pl.Series(np.r_[prices, np.zeros(df.height - n)]))
                         .otherwise(pl.col("index_price")).alias("index_price"))
    atomic_write_parquet(df, f)
    got = _series(exact_harvest)
    row = got.filter(pl.col("snapshot_ts") == pl.lit(first_ts).dt.cast_time_unit("us"))
    assert row["index_usd"].item() == float(np.median(prices[2:]))
    assert row["index_source"].item() == "index_price"


def test_unsorted_rows_give_the_same_series(exact_harvest: Path) -> None:
    before = _series(exact_harvest)
    for f in _files(exact_harvest):
        df = pl.read_parquet(f)
        atomic_write_parquet(df.sample(fraction=1.0, shuffle=True, seed=3), f)
    after = _series(exact_harvest)
    assert after.equals(before)


def test_snapshot_without_any_index_falls_back_to_the_nearest_forward(exact_harvest: Path) -> None:
    f = _files(exact_harvest)[-1]
    df = pl.read_parquet(f)
    last_ts = df["snapshot_ts"].max()
    atomic_write_parquet(df.with_columns(pl.when(pl.col("snapshot_ts") == last_ts).then(None)
                                         .otherwise(pl.col("index_price")).alias("index_price")), f)
    got = _series(exact_harvest)
    row = got.filter(pl.col("snapshot_ts") == pl.lit(last_ts).dt.cast_time_unit("us"))
    assert row["index_source"].item() == "nearest_forward"
    assert row["index_usd"].item() > 0

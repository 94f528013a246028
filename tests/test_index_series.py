"""The per-snapshot index series: one-row-per-run fast path, and the exact median when data breaks its assumptions."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import numpy as np
import polars as pl

from calib.data.index_spot import INDEX_METADATA_KEY, read_index_metadata
from calib.data.layout import atomic_write_parquet
from calib.data.reader import (
    HarvestFiles,
    _scan_index_series,
    find_harvest_files,
    read_index_series,
)
from tests.synth import END


def _files(root: Path) -> list[Path]:
    return sorted((root / "BTC").rglob("*.parquet"))


def _hf(root: Path) -> HarvestFiles:
    return find_harvest_files(root, "BTC", window_start=END - timedelta(days=3), window_end=END)


def _series(root: Path) -> pl.DataFrame:
    """The series as runs read it, checked against a full scan of the files (footers ignored)."""
    hf = _hf(root)
    got = read_index_series(hf)
    assert got.equals(_scan_index_series(hf, hf.files))
    return got


def _strip_footer(f: Path) -> None:
    """Rewrite `f` as another tool would: same rows, no calib metadata."""
    df = pl.read_parquet(f)
    f.unlink()
    df.write_parquet(f)


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


def test_files_calib_writes_carry_the_series_and_runs_read_it_from_there(exact_harvest: Path) -> None:
    files = _files(exact_harvest)
    assert all(read_index_metadata(f) is not None for f in files)
    hf = _hf(exact_harvest)
    want = _scan_index_series(hf, hf.files)
    # Footers only, footers and scans mixed, scans only: the same series.
    assert read_index_series(hf).equals(want)
    _strip_footer(files[0])
    assert read_index_metadata(files[0]) is None
    assert read_index_series(_hf(exact_harvest)).equals(want)
    for f in files[1:]:
        _strip_footer(f)
    assert read_index_series(_hf(exact_harvest)).equals(want)


def test_a_snapshot_in_two_files_takes_the_median_over_both(exact_harvest: Path) -> None:
    f = _files(exact_harvest)[-1]
    df = pl.read_parquet(f)
    last_ts = df["snapshot_ts"].max()
    # A late file in the same partition repeats the last snapshot with another index.
    extra = df.filter(pl.col("snapshot_ts") == last_ts).with_columns(pl.col("index_price") * 2)
    atomic_write_parquet(extra, f.parent / "late.parquet")
    got = read_index_series(_hf(exact_harvest))
    both = pl.concat([df.filter(pl.col("snapshot_ts") == last_ts), extra])["index_price"]
    row = got.filter(pl.col("snapshot_ts") == pl.lit(last_ts).dt.cast_time_unit("us"))
    assert row["index_usd"].item() == float(np.median(both.to_numpy()))


def test_malformed_footer_metadata_is_scanned(exact_harvest: Path) -> None:
    f = _files(exact_harvest)[-1]
    df = pl.read_parquet(f)
    f.unlink()
    df.write_parquet(f, metadata={INDEX_METADATA_KEY: "{not json"})
    assert read_index_metadata(f) is None
    _series(exact_harvest)


def test_a_footer_whose_row_count_disagrees_with_the_file_is_not_trusted(exact_harvest: Path) -> None:
    """A file rewritten by another tool that kept calib's footer (here: rows dropped, prices changed)."""
    f = _files(exact_harvest)[-1]
    df = pl.read_parquet(f)
    stale = pl.read_parquet_metadata(f)[INDEX_METADATA_KEY]
    before = _series(exact_harvest)
    edited = df.head(df.height // 2).with_columns(pl.col("index_price") * 1.5)
    f.unlink()
    edited.write_parquet(f, metadata={INDEX_METADATA_KEY: stale})
    assert pl.read_parquet_metadata(f)[INDEX_METADATA_KEY] == stale  # footer kept, rows not
    assert read_index_metadata(f) is None
    got = _series(exact_harvest)  # equals a scan of the rows as they are now
    ts = edited["snapshot_ts"].dt.cast_time_unit("us").unique()
    new = got.filter(pl.col("snapshot_ts").is_in(ts.implode()))["index_usd"].to_numpy()
    old = before.filter(pl.col("snapshot_ts").is_in(ts.implode()))["index_usd"].to_numpy()
    np.testing.assert_allclose(new, old * 1.5, rtol=1e-12)


def test_index_spot_has_one_definition() -> None:
    """Footer writer, scan and live chain use `index_spot_expr`: median of positive, non-NaN prices."""
    from calib.data.index_spot import index_spot_metadata, index_spot_per_snapshot

    ts = pl.datetime_range(pl.datetime(2026, 1, 1, time_zone="UTC"), pl.datetime(2026, 1, 1, 2, time_zone="UTC"),
                           "1h", eager=True, time_unit="us")
    frame = pl.DataFrame({"snapshot_ts": [ts[0]] * 4 + [ts[1]] * 2 + [ts[2]],
                          "index_price": [100.0, 0.0, float("nan"), 104.0, 7.0, 9.0, -1.0]})
    want = [102.0, 8.0, None]
    assert index_spot_per_snapshot(frame.lazy()).collect()["index_spot"].to_list() == want
    import json
    assert json.loads(index_spot_metadata(frame)[INDEX_METADATA_KEY])["index_spot"] == want

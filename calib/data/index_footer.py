"""A harvest file's index series, stored in its own Parquet footer when calib writes it.

RV_7d needs one index value per snapshot over the window and 7 days of warm-up:
the median positive `index_price` of the snapshot's rows (`read_index_series`).
Scanning that column out of 3 weeks of files costs ~30-75 ms and ~70 MB of fresh
memory on every run, for a result of ~300 numbers per day that never changes
(harvest files are immutable). So every harvest file calib writes carries those
numbers as key-value metadata, computed from the rows being written with the same
definition; the reader takes them from the footer and scans only files without
them (written by other tools, or before this existed).
"""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl

INDEX_METADATA_KEY = "calib.index_spot"
_VERSION = 1


def index_spot_metadata(frame: pl.DataFrame) -> dict[str, str]:
    """``{INDEX_METADATA_KEY: json}``: per snapshot of `frame`, the median positive `index_price` (null if none).

    Empty when `frame` has no datetime `snapshot_ts` or no `index_price` column
    (the reader then scans the file as before).
    """
    if "index_price" not in frame.columns or not isinstance(frame.schema.get("snapshot_ts"), pl.Datetime):
        return {}
    price = pl.col("index_price").cast(pl.Float64, strict=False)
    per_snapshot = (
        frame.lazy()
        .group_by(pl.col("snapshot_ts").dt.epoch("us").alias("snapshot_us"))
        .agg(price.filter((price > 0) & price.is_not_nan()).median().alias("index_spot"))
        .sort("snapshot_us")
        .collect()
    )
    return {INDEX_METADATA_KEY: json.dumps({
        "version": _VERSION,
        "rows": frame.height,
        "snapshot_us": per_snapshot["snapshot_us"].to_list(),
        "index_spot": per_snapshot["index_spot"].to_list(),
    })}


def read_index_metadata(path: str | Path) -> pl.DataFrame | None:
    """`snapshot_ts` (us, UTC) and `index_spot` from the file's footer, or None when it has none.

    Unreadable or malformed metadata also gives None: the caller scans the file.
    """
    try:
        raw = pl.read_parquet_metadata(path).get(INDEX_METADATA_KEY)
        if raw is None:
            return None
        d = json.loads(raw)
        if d.get("version") != _VERSION or len(d["snapshot_us"]) != len(d["index_spot"]):
            return None
        return pl.DataFrame({
            "snapshot_ts": pl.Series(d["snapshot_us"], dtype=pl.Int64),
            "index_spot": pl.Series(d["index_spot"], dtype=pl.Float64),
        }).with_columns(pl.from_epoch("snapshot_ts", time_unit="us").dt.replace_time_zone("UTC"))
    except Exception:  # noqa: BLE001 - a footer we cannot use is scanned instead
        return None

"""The index value of a snapshot, defined once, and a harvest file's series of them in its footer.

RV_7d needs one index value per snapshot over the window and 7 days of warm-up:
the median positive `index_price` of the snapshot's rows (`index_spot_expr`; the
reader, the footer writer and the live chain all use it).
Scanning that column out of 3 weeks of files costs ~30-75 ms and ~70 MB of fresh
memory on every run, for a result of ~300 numbers per day that never changes
(harvest files are immutable). So every harvest file calib writes carries those
numbers as key-value metadata, computed from the rows being written with the same
definition; the reader takes them from the footer and scans only files without
them (written by other tools, or before this existed).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import polars as pl

from calib.data.footer import INDEX_METADATA_KEY, ParquetFooter, read_footer

_VERSION = 1


def usable_index_price(price: pl.Expr) -> pl.Expr:
    """`price` where it can be a spot index (positive, not NaN), else null."""
    return pl.when((price > 0) & price.is_not_nan()).then(price)


def index_spot_expr(price: pl.Expr | None = None) -> pl.Expr:
    """Aggregation: the median usable `index_price` of a snapshot's rows (null if none), as `index_spot`."""
    price = pl.col("index_price") if price is None else price
    return price.filter((price > 0) & price.is_not_nan()).median().alias("index_spot")


def index_spot_per_snapshot(rows: pl.LazyFrame, by: pl.Expr | str = "snapshot_ts") -> pl.LazyFrame:
    """One row per snapshot of `rows` (`by`, `index_spot`), sorted by snapshot."""
    key = pl.col(by) if isinstance(by, str) else by
    return rows.group_by(key).agg(index_spot_expr()).sort(key.meta.output_name())


def index_spot_metadata(frame: pl.DataFrame) -> dict[str, str]:
    """``{INDEX_METADATA_KEY: json}``: per snapshot of `frame`, the median positive `index_price` (null if none).

    Empty when `frame` has no datetime `snapshot_ts` or no `index_price` column
    (the reader then scans the file as before).
    """
    if "index_price" not in frame.columns or not isinstance(frame.schema.get("snapshot_ts"), pl.Datetime):
        return {}
    per_snapshot = index_spot_per_snapshot(
        frame.lazy().with_columns(pl.col("index_price").cast(pl.Float64, strict=False)),
        pl.col("snapshot_ts").dt.epoch("us").alias("snapshot_us"),
    ).collect()
    return {INDEX_METADATA_KEY: json.dumps({
        "version": _VERSION,
        "rows": frame.height,
        "snapshot_us": per_snapshot["snapshot_us"].to_list(),
        "index_spot": per_snapshot["index_spot"].to_list(),
    })}


def read_index_metadata(path: str | Path) -> pl.DataFrame | None:
    """`snapshot_ts` (us, UTC) and `index_spot` from the file's footer, or None when it has none
    (or the file cannot be read here: the reader then scans it and reports it)."""
    try:
        footer = read_footer(path)
    except Exception:  # noqa: BLE001 - unreadable here means scanned (and reported) by the reader
        return None
    return index_from_footer(footer)


def index_from_footer(footer: ParquetFooter) -> pl.DataFrame | None:
    """The footer's series as `snapshot_ts` (us, UTC), `index_spot`; None (the caller scans the file)
    where the footer has no series, cannot be parsed, or was written for another number of rows than
    the file now holds: a tool that rewrites a file's rows but keeps its key-value metadata would
    otherwise leave a series of rows that no longer exist."""
    d = _parse_footer(footer.index_meta)
    if d is None or d["rows"] != footer.num_rows:
        return None
    return pl.DataFrame({
        "snapshot_ts": pl.Series(d["snapshot_us"], dtype=pl.Int64),
        "index_spot": pl.Series(d["index_spot"], dtype=pl.Float64),
    }).with_columns(pl.from_epoch("snapshot_ts", time_unit="us").dt.replace_time_zone("UTC"))


def _parse_footer(raw: str | None) -> dict[str, Any] | None:
    """The footer's series as written (version, rows, snapshot_us, index_spot), or None if unusable."""
    try:
        if raw is None:
            return None
        d = json.loads(raw)
        if (not isinstance(d, dict) or d.get("version") != _VERSION or not isinstance(d.get("rows"), int)
                or len(d["snapshot_us"]) != len(d["index_spot"])):
            return None
        return d
    except Exception:  # noqa: BLE001 - a footer we cannot use is scanned instead
        return None

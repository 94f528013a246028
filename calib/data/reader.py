"""Read harvested snapshots straight from Parquet with polars.

Files are pruned by their `date=YYYY-MM-DD` partition, checked by reading
their footer (a truncated file is skipped and reported, not fatal), grouped
by physical schema so drifting files (a column added later, ms vs ns
timestamps, naive vs tz-aware) are each cast to the contract types, then
scanned lazily with projection and time-predicate pushdown and collected in
parallel. Two frames come back: the option quotes of the window, and the
index series of the window plus its RV warm-up.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import polars as pl

from calib.data.compact import effective_parquet_files
from calib.data.layout import list_parquet_files
from calib.data.schema import HARVEST_SCHEMA, parse_instrument_exprs
from calib.errors import NoDataError

TS_TYPE = pl.Datetime("us", "UTC")
# Columns the engine and the quality checks use; the rest stay on disk.
QUOTE_COLUMNS: tuple[str, ...] = (
    "snapshot_ts",
    "instrument_name",
    "expiry_ts",
    "strike",
    "option_type",
    "mark_price",
    "mark_iv",
    "underlying_price",
    "index_price",
    "bid_price",
    "ask_price",
)
_DATE_DIR = re.compile(r"^date=(\d{4}-\d{2}-\d{2})$")


@dataclass(frozen=True, slots=True, kw_only=True)
class SkippedFile:
    path: str
    error: str


@dataclass(frozen=True, slots=True, kw_only=True)
class HarvestRead:
    """What the reader found for one underlying and window."""

    quotes: pl.DataFrame  # QUOTE_COLUMNS (+ parsed fields), window rows only
    index: pl.DataFrame  # snapshot_ts, index_usd, index_source over warm-up + window
    columns_present: frozenset[str]  # contract columns present in at least one file
    columns_missing_somewhere: frozenset[str]  # present in some files, absent in others
    files_total: int
    files_read: int
    skipped: tuple[SkippedFile, ...] = field(default_factory=tuple)
    window_start: datetime
    window_end: datetime
    newest_snapshot_ts: datetime | None


def _partition_date(path: Path) -> date | None:
    for part in reversed(path.parts[:-1]):
        m = _DATE_DIR.match(part)
        if m:
            return date.fromisoformat(m.group(1))
    return None


def _ts_expr(name: str, dtype: pl.DataType) -> pl.Expr:
    """Cast a timestamp column of any unit/zone (naive means UTC) to us UTC."""
    col = pl.col(name)
    if isinstance(dtype, pl.Datetime):
        if dtype.time_zone is None:
            col = col.dt.replace_time_zone("UTC")
        elif dtype.time_zone != "UTC":
            col = col.dt.convert_time_zone("UTC")
        return col.dt.cast_time_unit("us").alias(name)
    if dtype in (pl.Int64, pl.Int32, pl.UInt64):  # epoch milliseconds, as Deribit sends them
        return pl.from_epoch(col, time_unit="ms").dt.replace_time_zone("UTC").dt.cast_time_unit("us").alias(name)
    return col.cast(pl.String).str.to_datetime(time_zone="UTC", strict=False).dt.cast_time_unit("us").alias(name)


def _normalize(schema: pl.Schema, wanted: tuple[str, ...]) -> list[pl.Expr]:
    exprs: list[pl.Expr] = []
    for name in wanted:
        target = HARVEST_SCHEMA[name]
        if name not in schema:
            dtype = TS_TYPE if isinstance(target, pl.Datetime) else target
            exprs.append(pl.lit(None, dtype=dtype).alias(name))
        elif isinstance(target, pl.Datetime):
            exprs.append(_ts_expr(name, schema[name]))
        else:
            exprs.append(pl.col(name).cast(target, strict=False).alias(name))
    return exprs


def read_harvest(
    data_root: Path,
    underlying: str,
    *,
    window_start: datetime,
    window_end: datetime,
    warmup: timedelta = timedelta(days=7),
    progress: Callable[[str], None] | None = None,
) -> HarvestRead:
    """Read quotes in `[window_start, window_end]` and the index from `window_start - warmup`.

    Files already merged into a compact file are not read twice
    (`effective_parquet_files`); a file the compactor unlinks between listing
    and reading makes the reader list again (at most 3 times).
    Raises NoDataError when the underlying's directory does not exist.
    """
    for attempt in range(3):
        try:
            return _read_once(data_root, underlying, window_start=window_start, window_end=window_end,
                              warmup=warmup, progress=progress)
        except _VanishedFileError:
            if attempt == 2:
                raise
    raise AssertionError("unreachable")


class _VanishedFileError(Exception):
    """A listed file disappeared before it was read (compaction in progress)."""


def _read_once(
    data_root: Path,
    underlying: str,
    *,
    window_start: datetime,
    window_end: datetime,
    warmup: timedelta = timedelta(days=7),
    progress: Callable[[str], None] | None = None,
) -> HarvestRead:
    base = Path(data_root) / underlying
    if not base.is_dir():
        raise NoDataError(f"no harvested data for {underlying}: directory {base} does not exist")
    warm_start = window_start - warmup
    files = [
        p
        for p in effective_parquet_files(Path(data_root), underlying)
        if (d := _partition_date(p)) is None or warm_start.date() <= d <= window_end.date()
    ]
    skipped: list[SkippedFile] = []
    groups: dict[tuple[tuple[str, str], ...], tuple[pl.Schema, list[str]]] = {}
    for path in files:
        try:
            schema = pl.read_parquet_schema(path)
        except FileNotFoundError as e:
            raise _VanishedFileError(str(path)) from e
        except Exception as e:  # truncated or not Parquet: report, keep going
            skipped.append(SkippedFile(path=str(path), error=f"{type(e).__name__}: {e}"[:300]))
            continue
        key = tuple((k, str(v)) for k, v in schema.items())
        groups.setdefault(key, (pl.Schema(schema), []))[1].append(str(path))
    if progress:
        progress(f"scanning {sum(len(v[1]) for v in groups.values())} files ({len(skipped)} unreadable)")

    present: set[str] = set()
    everywhere: set[str] = set(HARVEST_SCHEMA)
    for schema, _ in groups.values():
        cols = set(schema) & set(HARVEST_SCHEMA)
        present |= cols
        everywhere &= cols
    lo = pl.lit(window_start).cast(TS_TYPE)
    hi = pl.lit(window_end).cast(TS_TYPE)
    wlo = pl.lit(warm_start).cast(TS_TYPE)

    quote_frames: list[pl.LazyFrame] = []
    index_frames: list[pl.LazyFrame] = []
    for schema, paths in groups.values():
        if "snapshot_ts" not in schema:
            continue  # cannot place these rows in time; reported as a missing required column
        scan = pl.scan_parquet(paths, hive_partitioning=False, glob=False)
        ts_filter_cast = _ts_expr("snapshot_ts", schema["snapshot_ts"])
        quote_frames.append(
            scan.select(_normalize(schema, QUOTE_COLUMNS)).filter(
                pl.col("snapshot_ts").is_between(lo, hi)
            )
        )
        idx_cols = ("snapshot_ts", "index_price", "underlying_price", "expiry_ts", "instrument_name")
        index_frames.append(
            scan.select(ts_filter_cast, *_normalize(schema, idx_cols[1:])).filter(
                pl.col("snapshot_ts").is_between(wlo, hi)
            )
        )
    if quote_frames:
        quotes_lf = pl.concat(quote_frames, how="vertical")
        index_lf = pl.concat(index_frames, how="vertical")
    else:
        quotes_lf = pl.DataFrame(schema={c: (TS_TYPE if isinstance(HARVEST_SCHEMA[c], pl.Datetime) else HARVEST_SCHEMA[c]) for c in QUOTE_COLUMNS}).lazy()
        index_lf = quotes_lf.select("snapshot_ts", "index_price", "underlying_price", "expiry_ts", "instrument_name")

    quotes_lf = _fill_from_name(quotes_lf)
    index_lf = _index_series(_fill_from_name(index_lf))
    try:
        quotes, index = pl.collect_all([quotes_lf, index_lf])
    except Exception as e:
        if any(not Path(p).exists() for _, paths in groups.values() for p in paths):
            raise _VanishedFileError(str(e)) from e
        raise
    newest = quotes["snapshot_ts"].max() if quotes.height else None
    return HarvestRead(
        quotes=quotes,
        index=index,
        columns_present=frozenset(present),
        columns_missing_somewhere=frozenset(present - everywhere),
        files_total=len(files),
        files_read=sum(len(v[1]) for v in groups.values()),
        skipped=tuple(skipped),
        window_start=window_start,
        window_end=window_end,
        newest_snapshot_ts=newest,  # type: ignore[arg-type]
    )


def _fill_from_name(lf: pl.LazyFrame) -> pl.LazyFrame:
    """Expiry, strike and type come from the instrument name where the columns are null."""
    cols = lf.collect_schema().names()
    parsed = parse_instrument_exprs(pl.col("instrument_name"))
    exprs = [
        pl.coalesce(pl.col(c), parsed[c].cast(TS_TYPE if c == "expiry_ts" else HARVEST_SCHEMA[c])).alias(c)
        for c in ("expiry_ts", "strike", "option_type")
        if c in cols
    ]
    return lf.with_columns(exprs)


def _index_series(lf: pl.LazyFrame) -> pl.LazyFrame:
    """One index value per snapshot; the nearest-expiry forward where the index is missing."""
    nearest_fwd = pl.col("underlying_price").filter(
        (pl.col("expiry_ts") == pl.col("expiry_ts").filter(pl.col("expiry_ts") > pl.col("snapshot_ts")).min())
    ).median()
    return (
        lf.group_by("snapshot_ts")
        .agg(
            pl.col("index_price").filter(pl.col("index_price") > 0).median().alias("index_spot"),
            nearest_fwd.alias("index_fallback"),
        )
        .with_columns(
            pl.coalesce("index_spot", "index_fallback").alias("index_usd"),
            pl.when(pl.col("index_spot").is_not_null())
            .then(pl.lit("index_price"))
            .when(pl.col("index_fallback").is_not_null())
            .then(pl.lit("nearest_forward"))
            .otherwise(pl.lit(None, dtype=pl.String))
            .alias("index_source"),
        )
        .select("snapshot_ts", "index_usd", "index_source")
        .sort("snapshot_ts")
    )


def default_window(
    data_root: Path, underlying: str, *, lookback: timedelta, as_of: datetime | None
) -> tuple[datetime, datetime, bool]:
    """The window `[end - lookback, end]`: end = `as_of`, else now clamped to the newest partition.

    Returns (start, end, clamped). Clamping keeps a stale harvest usable; the
    caller reports how old the newest data is.
    """
    if as_of is not None:
        end = as_of if as_of.tzinfo else as_of.replace(tzinfo=UTC)
        return end - lookback, end, False
    now = datetime.now(UTC)
    dates = [d for p in list_parquet_files(Path(data_root), underlying) if (d := _partition_date(p))]
    if dates:
        newest_day_end = datetime.combine(max(dates), datetime.min.time(), tzinfo=UTC) + timedelta(days=1)
        if newest_day_end < now:
            newest = _newest_snapshot(Path(data_root), underlying, max(dates))
            if newest is not None:
                return newest - lookback, newest, True
    return now - lookback, now, False


def _newest_snapshot(data_root: Path, underlying: str, day: date) -> datetime | None:
    paths = [str(p) for p in list_parquet_files(data_root, underlying) if _partition_date(p) == day]
    best: datetime | None = None
    for p in paths:
        try:
            schema = pl.read_parquet_schema(p)
            if "snapshot_ts" not in schema:
                continue
            v = pl.scan_parquet(p).select(_ts_expr("snapshot_ts", schema["snapshot_ts"]).max()).collect().item()
        except Exception:  # unreadable files are reported by read_harvest
            continue
        if v is not None and (best is None or v > best):
            best = v
    return best


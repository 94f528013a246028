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

import functools

import re
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import TypeVar

import numpy as np
import polars as pl

from calib.data.compact import effective_parquet_files
from calib.data.footer import read_footer
from calib.data.index_spot import index_from_footer, index_spot_per_snapshot, usable_index_price
from calib.data.layout import list_parquet_files
from calib.data.schema import HARVEST_SCHEMA, PARSED_COLUMNS, fill_from_name
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
_PARSED: tuple[str, ...] = PARSED_COLUMNS  # parsed from the name when absent
_T = TypeVar("_T")


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
    def once() -> HarvestRead:
        hf = find_harvest_files(data_root, underlying, window_start=window_start, window_end=window_end,
                                warmup=warmup, progress=progress)
        quotes = collect_checked(hf, [scan_quotes(hf, with_names=True)])[0]
        if _has_parse_gaps(quotes, hf):  # rare: rows whose expiry/strike/type are null in the file
            quotes = collect_checked(hf, [scan_quotes(hf, with_names=True, parse_names=True)])[0]
        index = read_index_series(hf)
        newest = quotes["snapshot_ts"].max() if quotes.height else None
        return HarvestRead(
            quotes=quotes,
            index=index,
            columns_present=hf.columns_present,
            columns_missing_somewhere=hf.columns_missing_somewhere,
            files_total=hf.files_total,
            files_read=len(hf.files),
            skipped=hf.skipped,
            window_start=window_start,
            window_end=window_end,
            newest_snapshot_ts=newest,  # type: ignore[arg-type]
        )

    return relisting(once)


class _VanishedFileError(Exception):
    """A listed file disappeared before it was read (compaction in progress)."""


def relisting(fn: Callable[[], _T]) -> _T:
    """Run `fn` (which lists and reads files) again when a listed file vanished, at most 3 times."""
    for attempt in range(3):
        try:
            return fn()
        except _VanishedFileError:
            if attempt == 2:
                raise
    raise AssertionError("unreachable")


@dataclass(frozen=True, slots=True, kw_only=True)
class HarvestFile:
    """One readable Parquet file of a harvest: its path, footer schema and `date=` partition."""

    path: str
    schema: pl.Schema
    day: date | None
    size_bytes: int = 0
    num_rows: int = 0  # from the footer
    index: pl.DataFrame | None = field(default=None, compare=False)  # the footer's series (`index_from_footer`)


@dataclass(frozen=True, slots=True, kw_only=True)
class HarvestFiles:
    """The files a window needs, footers read, no rows read yet.

    `files` covers the RV warm-up and the window; `quote_files()` only the
    window (partition pruning). Scans built from it (`scan_quotes`,
    `read_index_series`) read only the columns the engine uses.
    """

    window_start: datetime
    window_end: datetime
    warm_start: datetime
    files: tuple[HarvestFile, ...]
    files_total: int
    skipped: tuple[SkippedFile, ...]
    columns_present: frozenset[str]
    columns_missing_somewhere: frozenset[str]

    def quote_files(self) -> list[HarvestFile]:
        """Files that can hold window rows: the warm-up-only partitions are left out."""
        first = self.window_start.date()
        return [f for f in self.files if f.day is None or f.day >= first]


def find_harvest_files(
    data_root: Path,
    underlying: str,
    *,
    window_start: datetime,
    window_end: datetime,
    warmup: timedelta = timedelta(days=7),
    progress: Callable[[str], None] | None = None,
) -> HarvestFiles:
    """List the window's files (partition-pruned) and read their footers.

    A truncated or non-Parquet file is skipped and reported, not fatal; a file
    that vanished since listing raises the error `relisting` retries on.
    Raises NoDataError when the underlying's directory does not exist.
    """
    base = Path(data_root) / underlying
    if not base.is_dir():
        raise NoDataError(f"no harvested data for {underlying}: directory {base} does not exist")
    warm_start = window_start - warmup
    listed = [
        (p, d)
        for p in effective_parquet_files(Path(data_root), underlying, days=(warm_start.date(), window_end.date()))
        if (d := _partition_date(p)) is None or warm_start.date() <= d <= window_end.date()
    ]
    skipped: list[SkippedFile] = []
    readable: list[HarvestFile] = []
    schemas: dict[tuple[tuple[str, str], ...], pl.Schema] = {}
    for path, day in listed:
        try:
            footer = read_footer(path)
            schema = footer.schema
            size = path.stat().st_size
        except FileNotFoundError as e:
            raise _VanishedFileError(str(path)) from e
        except Exception as e:  # truncated or not Parquet: report, keep going
            skipped.append(SkippedFile(path=str(path), error=f"{type(e).__name__}: {e}"[:300]))
            continue
        key = tuple((k, str(v)) for k, v in schema.items())
        readable.append(HarvestFile(path=str(path), schema=schemas.setdefault(key, pl.Schema(schema)), day=day,
                                    size_bytes=size, num_rows=footer.num_rows, index=index_from_footer(footer)))
    if progress:
        progress(f"scanning {len(readable)} files ({len(skipped)} unreadable)")
    present: set[str] = set()
    everywhere: set[str] = set(HARVEST_SCHEMA)
    for schema in schemas.values():
        cols = set(schema) & set(HARVEST_SCHEMA)
        present |= cols
        everywhere &= cols
    return HarvestFiles(
        window_start=window_start, window_end=window_end, warm_start=warm_start, files=tuple(readable),
        files_total=len(listed), skipped=tuple(skipped), columns_present=frozenset(present),
        columns_missing_somewhere=frozenset(present - everywhere),
    )


def _by_schema(files: Sequence[HarvestFile]) -> list[tuple[pl.Schema, list[str]]]:
    groups: dict[int, tuple[pl.Schema, list[str]]] = {}
    for f in files:
        if "snapshot_ts" in f.schema:  # rows without a time are reported as a missing required column
            groups.setdefault(id(f.schema), (f.schema, []))[1].append(f.path)
    return list(groups.values())


def _empty(columns: Sequence[str]) -> pl.LazyFrame:
    return pl.DataFrame(schema={c: TS_TYPE if isinstance(HARVEST_SCHEMA[c], pl.Datetime) else HARVEST_SCHEMA[c]
                                for c in columns}).lazy()


def scan_quotes(
    hf: HarvestFiles,
    files: Sequence[HarvestFile] | None = None,
    *,
    with_names: bool = False,
    parse_names: bool = False,
) -> pl.LazyFrame:
    """Lazy quotes of the window: QUOTE_COLUMNS cast to the contract types (us UTC timestamps).

    Only window partitions are scanned (`files` narrows them further, e.g. to
    one partition for chunked runs). Expiry, strike and type are parsed from
    `instrument_name` for files that lack those columns; `parse_names=True`
    also fills nulls inside present columns (slower: a regex per row, so
    callers try without it first). `instrument_name` itself is returned only
    with `with_names`.
    """
    lo, hi = _ts_bounds(hf.window_start, hf.window_end)
    columns = QUOTE_COLUMNS if with_names else tuple(c for c in QUOTE_COLUMNS if c != "instrument_name")
    frames = []
    for schema, paths in _by_schema(hf.quote_files() if files is None else files):
        lf = pl.scan_parquet(paths, hive_partitioning=False, glob=False).select(_normalize(schema, QUOTE_COLUMNS))
        lf = lf.filter(pl.col("snapshot_ts").is_between(lo, hi))
        lacking = any(c not in schema for c in _PARSED)
        if "instrument_name" in schema and (parse_names or lacking):
            lf = fill_from_name(lf, [c for c in _PARSED if c not in schema])
        frames.append(lf.select(columns))
    return pl.concat(frames, how="vertical") if frames else _empty(columns)


@functools.lru_cache(maxsize=16)
def _ts_bounds(start: datetime, end: datetime) -> tuple[pl.Expr, pl.Expr]:
    """Window bounds as timestamp literals (~0.5 ms each to build; a window scans many chunks)."""
    return pl.lit(start).cast(TS_TYPE), pl.lit(end).cast(TS_TYPE)


def partition_groups(files: Sequence[HarvestFile]) -> list[list[HarvestFile]]:
    """Files grouped by `date=` partition in time order (files outside partitions first, together).

    A snapshot lives in exactly one partition, so per-group results (index
    medians, quote counts) combine exactly; one group is the unit of work of
    chunked reads.
    """
    by_day: dict[date | None, list[HarvestFile]] = {}
    for f in files:
        by_day.setdefault(f.day, []).append(f)
    return [by_day[d] for d in sorted(by_day, key=lambda d: (d is not None, d or date.min))]


def names_parse_more(files: Sequence[HarvestFile]) -> bool:
    """True when `scan_quotes(..., parse_names=True)` would read `files` differently than without it.

    Files lacking expiry, strike or type always have them parsed from the name;
    `parse_names` adds only the files that store all three (and the name), to
    fill their nulls. A window with none of those (the minimal layout) gains
    nothing from a second read with `parse_names`: its unparsable names stay unparsable.
    """
    return any("instrument_name" in f.schema and all(c in f.schema for c in _PARSED) for f in files)


def _has_parse_gaps(quotes: pl.DataFrame, hf: HarvestFiles) -> bool:
    """True when rows have a null expiry/strike/type that their instrument name could fill."""
    if not names_parse_more(hf.quote_files()) or quotes.height == 0:
        return False
    return bool(quotes.select(pl.any_horizontal(pl.col(c).is_null() for c in _PARSED).any()).item())


MIN_BYTES_PER_ROW = 4  # no harvest row compresses below this (4 required columns)


def max_rows(files: Sequence[HarvestFile]) -> int:
    """An upper bound on the files' rows from their sizes alone (no file opened)."""
    return sum(f.size_bytes for f in files) // MIN_BYTES_PER_ROW


def estimate_rows(files: Sequence[HarvestFile]) -> int:
    """Row count from the Parquet footers (read when the files were listed: no file opened)."""
    return sum(f.num_rows for f in files)


@contextmanager
def reading(hf: HarvestFiles) -> Iterator[None]:
    """Turn a read error caused by a file that vanished since listing into the error `relisting` retries."""
    try:
        yield
    except _VanishedFileError:
        raise
    except Exception as e:
        if any(not Path(f.path).exists() for f in hf.files):
            raise _VanishedFileError(str(e)) from e
        raise


def window_snapshots(hf: HarvestFiles) -> list[datetime]:
    """Distinct snapshot times inside the window, oldest first (reads one column)."""
    lo = pl.lit(hf.window_start).cast(TS_TYPE)
    hi = pl.lit(hf.window_end).cast(TS_TYPE)
    frames = [
        pl.scan_parquet(f.path, hive_partitioning=False, glob=False)
        .select(_ts_expr("snapshot_ts", f.schema["snapshot_ts"]))
        .filter(pl.col("snapshot_ts").is_between(lo, hi))
        for f in hf.quote_files()
        if "snapshot_ts" in f.schema
    ]
    if not frames:
        return []
    with reading(hf):
        ts = pl.concat(frames).unique().sort("snapshot_ts").collect()
    return list(ts["snapshot_ts"])


def without_corrupt_files(hf: HarvestFiles) -> HarvestFiles | None:
    """Read every file's pages once; return `hf` minus the files that fail, or None if all read.

    Footers were checked when listing; this finds the rarer file whose footer is
    intact but whose data pages are not. Only run after a scan has failed.
    """
    bad: list[SkippedFile] = []
    good: list[HarvestFile] = []
    for f in hf.files:
        cols = [c for c in QUOTE_COLUMNS if c in f.schema]
        try:
            pl.read_parquet(f.path, columns=cols)
        except FileNotFoundError as e:
            raise _VanishedFileError(f.path) from e
        except Exception as e:  # corrupt pages: reported as a skipped file by the caller
            bad.append(SkippedFile(path=f.path, error=f"{type(e).__name__}: {e}"[:300]))
        else:
            good.append(f)
    if not bad:
        return None
    return replace(hf, files=tuple(good), skipped=(*hf.skipped, *bad))


def collect_checked(hf: HarvestFiles, frames: list[pl.LazyFrame], *, streaming: bool = False) -> list[pl.DataFrame]:
    """`pl.collect_all` under `reading(hf)` (polars' streaming engine when `streaming`)."""
    with reading(hf):
        return pl.collect_all(frames, engine="streaming") if streaming else pl.collect_all(frames)


def read_index_series(hf: HarvestFiles, files: Sequence[HarvestFile] | None = None) -> pl.DataFrame:
    """One index value per snapshot over warm-up + window: `snapshot_ts, index_usd, index_source`.

    The median positive `index_price` of the snapshot; where a snapshot has
    none, the median forward of its nearest unexpired expiry (a second,
    filtered read that only runs when needed). Files written by calib carry
    their per-snapshot medians in the footer (`calib.data.index_spot`): those
    are read from there, the others scanned (`_scan_index_series`). A snapshot
    found in two files (the median must see all its rows) sends everything
    through the scan.
    """
    files = list(hf.files if files is None else files)
    from_footer: list[tuple[HarvestFile, pl.DataFrame]] = []
    rest: list[HarvestFile] = []
    for f in files:
        ix = f.index if "snapshot_ts" in f.schema else None  # read with the footer when listing
        if ix is None:
            rest.append(f)
        else:
            from_footer.append((f, ix))
    if not from_footer:
        return _scan_index_series(hf, files)
    wlo, hi = pl.lit(hf.warm_start).cast(TS_TYPE), pl.lit(hf.window_end).cast(TS_TYPE)
    spot = pl.concat([ix for _, ix in from_footer]).filter(pl.col("snapshot_ts").is_between(wlo, hi))
    parts = [_index_finish(hf, [f for f, _ in from_footer], spot)]
    if rest:
        parts.append(_scan_index_series(hf, rest))
    index = pl.concat(parts, how="vertical").sort("snapshot_ts") if len(parts) > 1 else parts[0]
    if index["snapshot_ts"].is_duplicated().any():
        return _scan_index_series(hf, files)
    return index


def _scan_index_series(hf: HarvestFiles, files: Sequence[HarvestFile]) -> pl.DataFrame:
    """`read_index_series` by reading the `index_price` column of `files`.

    Reads `INDEX_BATCH` partitions at a time (a snapshot lives in one partition,
    so the pieces concatenate exactly and memory stays bounded); files outside
    partitions are read in one pass with everything when they share snapshots
    with partitioned files.
    """
    files = list(files)
    groups = partition_groups(files)
    if len(groups) > 1:
        parts = []
        for i in range(0, len(groups), INDEX_BATCH):  # a few partitions per read: fast, still bounded
            batch = [f for g in groups[i:i + INDEX_BATCH] for f in g]
            parts.append(_index_finish(hf, batch, _index_spot_frame(hf, batch)))
        index = pl.concat(parts, how="vertical").sort("snapshot_ts")
        if not index["snapshot_ts"].is_duplicated().any():
            return index
        # A snapshot split across groups (files outside partitions): read everything in one pass.
    return _index_finish(hf, files, _index_spot_frame(hf, files))


INDEX_BATCH = 16  # partitions read together by `read_index_series` (~4M rows x 2 columns)


def _index_rows(hf: HarvestFiles, files: Sequence[HarvestFile]) -> pl.LazyFrame:
    wlo = pl.lit(hf.warm_start).cast(TS_TYPE)
    hi = pl.lit(hf.window_end).cast(TS_TYPE)
    frames = []
    for schema, paths in _by_schema(files):
        scan = pl.scan_parquet(paths, hive_partitioning=False, glob=False)
        frames.append(scan.select(_ts_expr("snapshot_ts", schema["snapshot_ts"]), *_normalize(schema, ("index_price",)))
                      .filter(pl.col("snapshot_ts").is_between(wlo, hi)))
    return pl.concat(frames, how="vertical") if frames else _empty(("snapshot_ts", "index_price"))


def _index_spot_frame(hf: HarvestFiles, files: Sequence[HarvestFile]) -> pl.DataFrame:
    """Median positive `index_price` per snapshot (null where the snapshot has none).

    Harvests store a snapshot's rows together with one index on every row, so
    the common case needs the first row of each run of equal `snapshot_ts`
    only. The scan checks that in the same pass (no row of a run differs from
    the one before it, no snapshot in two runs) and returns one row per
    snapshot, never materializing the ~800 rows of each. Data that fails the
    check (index varying inside a snapshot, unsorted files) takes the exact
    per-snapshot median with a group-by.
    """
    price = pl.col("index_price")
    ts = pl.col("snapshot_ts")
    spot = pl.col("spot")
    # One pass, one small output: each run's first row, plus any row that differs from the row
    # before it inside a run (none in a well-formed harvest). Two queries over a shared subplan
    # would make polars cache all rows (~100 MB at 21 days).
    marked = collect_checked(hf, [
        _index_rows(hf, files)
        .with_columns(usable_index_price(price).alias("spot"),
                      ts.ne_missing(ts.shift(1)).alias("new_run"))
        .filter(pl.col("new_run") | spot.ne_missing(spot.shift(1)))
        .select("snapshot_ts", spot.alias("index_spot"), "new_run")], streaming=True)[0]
    if bool(marked["new_run"].all()) and not marked["snapshot_ts"].is_duplicated().any():
        return marked.drop("new_run")
    return collect_checked(hf, [index_spot_per_snapshot(_index_rows(hf, files))])[0]


def _index_finish(hf: HarvestFiles, files: Sequence[HarvestFile], index: pl.DataFrame) -> pl.DataFrame:
    """Fill snapshots without an index from their nearest-expiry forward; label the source."""
    missing = index.filter(pl.col("index_spot").is_null())["snapshot_ts"]
    fallback = pl.DataFrame(schema={"snapshot_ts": TS_TYPE, "index_fallback": pl.Float64})
    if missing.len():
        cols = ("snapshot_ts", "index_price", "underlying_price", "expiry_ts", "instrument_name")
        frames = []
        for schema, paths in _by_schema(files):
            scan = pl.scan_parquet(paths, hive_partitioning=False, glob=False)
            lf = scan.select(_ts_expr("snapshot_ts", schema["snapshot_ts"]), *_normalize(schema, cols[1:]))
            frames.append(fill_from_name(lf.filter(pl.col("snapshot_ts").is_in(missing.implode())),
                                          [c for c in _PARSED if c not in schema]))
        nearest_fwd = pl.col("underlying_price").filter(
            pl.col("expiry_ts") == pl.col("expiry_ts").filter(pl.col("expiry_ts") > pl.col("snapshot_ts")).min()
        ).median()
        fallback = collect_checked(hf, [pl.concat(frames, how="vertical").group_by("snapshot_ts").agg(
            nearest_fwd.alias("index_fallback"))])[0]
    return (
        index.join(fallback, on="snapshot_ts", how="left")
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
            newest = newest_snapshot(Path(data_root), underlying)
            if newest is not None:
                return newest - lookback, newest, True
    return now - lookback, now, False


def newest_snapshot(data_root: Path, underlying: str) -> datetime | None:
    """Newest `snapshot_ts` under `<data_root>/<UND>`, reading the newest readable directory only.

    Unreadable files are passed over here; `read_harvest` is what reports them.
    """
    by_dir: dict[Path, list[Path]] = {}
    for p in list_parquet_files(data_root, underlying):
        by_dir.setdefault(p.parent, []).append(p)
    for d in sorted(by_dir, key=lambda d: (_partition_date(d / "x") or date.min, str(d)), reverse=True):
        best: datetime | None = None
        for p in by_dir[d]:
            try:
                schema = pl.read_parquet_schema(p)
                if "snapshot_ts" not in schema:
                    continue
                v = pl.scan_parquet(p).select(_ts_expr("snapshot_ts", schema["snapshot_ts"]).max()).collect().item()
            except Exception:  # noqa: S112 - reported by read_harvest, not by this probe
                continue
            if v is not None and (best is None or v > best):
                best = v
        if best is not None:
            return best
    return None


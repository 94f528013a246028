"""Merge a day's many small snapshot files into one compact Parquet file.

A harvester writing every minute leaves ~1,440 files per underlying per day;
readers are faster on one sorted file with row-group statistics. `compact_day`
turns ``<root>/<UND>/date=YYYY-MM-DD/*.parquet`` into
``<root>/<UND>/date=YYYY-MM-DD/compact_YYYY-MM-DD.parquet``.

How a reader never loses a row and need not double count one
----------------------------------------------------------------
There is no atomic "swap N files for 1" on a POSIX filesystem, so one of two
windows must exist:

1. *delete first* (write merged under a hidden name, unlink the sources, rename
   the merged file in): readers never double count, but between the unlinks and
   the rename the rows are missing, and a crash in that window loses them from
   view until recovery;
2. *publish first* (what this module does): write the merged file under a hidden
   temp name, fsync it, verify its row count, ``os.replace`` it in, fsync the
   directory, and only then unlink the sources. No row is ever missing and a crash
   at any point loses nothing; in the short window between the rename and the
   unlinks (or after a crash there) a row is visible twice.

The double count is made harmless two ways:

- the compact file's Parquet key-value metadata ``calib.compacted_from`` lists
  each merged source as ``{"name", "size_bytes", "mtime_ns"}``;
  `effective_parquet_files` (the reader-side rule) drops a file that sits next to
  a compact file listing it with the same size and mtime. Size and mtime, not
  just the name, so a *new* file that reuses a merged name is never hidden. This
  is exact for a day compacted once (completed days, `compact_all`);
- every row is keyed by ``(snapshot_ts, instrument_name)``, so a reader may also
  ``unique()`` on that key. That is needed only when late files are merged into
  a day that already has a compact file: the compact file is then replaced in
  place, and a reader that read its footer before the replacement and its rows
  after it would see the late rows twice.

Re-running is idempotent: sources already listed in the compact file are only
unlinked (crash recovery), new files arriving later in the day are merged into
the existing compact file (rewritten whole, again publish-first). Unreadable or
incompatible files are left in place and reported. One compactor per partition
at a time is assumed (the harvester may keep writing new files meanwhile).
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import polars as pl

from calib._typing import UNDERLYINGS
from calib.data.layout import list_parquet_files, partition_dir
from calib.data.schema import HARVEST_SCHEMA
from calib.errors import InvalidInputError, NoDataError

COMPACT_STEM = "compact"
SOURCES_METADATA_KEY = "calib.compacted_from"
SORT_KEY: tuple[str, ...] = ("snapshot_ts", "instrument_name")


@dataclass(frozen=True, slots=True, kw_only=True)
class CompactResult:
    """What `compact_day` did to one partition.

    Attributes
    ----------
    underlying, day
        The partition.
    path
        The compact file (new or pre-existing), or None if the day has none.
    n_sources_merged
        Source files merged in this run.
    n_rows
        Rows in the compact file after this run.
    removed
        Source files unlinked (merged now, or merged by an earlier interrupted run).
    skipped
        ``(file, reason)`` for files left in place: unreadable, missing a key
        column, or with columns of an incompatible type.
    not_removed
        ``(file, reason)`` for merged files that could not be unlinked; the compact
        file lists them, so `effective_parquet_files` already ignores them.
    """

    underlying: str
    day: date
    path: Path | None
    n_sources_merged: int
    n_rows: int
    removed: tuple[Path, ...] = ()
    skipped: tuple[tuple[Path, str], ...] = ()
    not_removed: tuple[tuple[Path, str], ...] = ()

    @property
    def changed(self) -> bool:
        """True when this run wrote a compact file or removed a source."""
        return self.n_sources_merged > 0 or bool(self.removed)

    def describe(self) -> str:
        """One log line."""
        text = (
            f"{self.underlying} {self.day:%Y-%m-%d}: merged {self.n_sources_merged} file(s), "
            f"removed {len(self.removed)}, {self.n_rows} rows in {self.path}"
        )
        for path, reason in self.skipped:
            text += f"; skipped {path.name}: {reason}"
        for path, reason in self.not_removed:
            text += f"; could not remove {path.name}: {reason}"
        return text


def compact_path(data_root: Path, underlying: str, day: date) -> Path:
    """``<root>/<UND>/date=YYYY-MM-DD/compact_YYYY-MM-DD.parquet``."""
    return (
        partition_dir(data_root, underlying, _day_start(day)) / f"{COMPACT_STEM}_{day:%Y-%m-%d}.parquet"
    )


def _day_start(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


def _as_day(day: date | str) -> date:
    if isinstance(day, datetime):
        return day.astimezone(UTC).date() if day.tzinfo else day.date()
    if isinstance(day, date):
        return day
    try:
        return date.fromisoformat(str(day))
    except ValueError as e:
        raise InvalidInputError(f"`date` must be YYYY-MM-DD; got {day!r}") from e


def _check_underlying(underlying: str) -> str:
    if underlying not in UNDERLYINGS:
        raise InvalidInputError(
            f"`underlying` must be one of {', '.join(UNDERLYINGS)}; got {underlying!r}"
        )
    return underlying


def _is_compact(path: Path) -> bool:
    return path.name.startswith(f"{COMPACT_STEM}_") and path.suffix == ".parquet"


def _signature(path: Path) -> dict[str, Any]:
    st = path.stat()
    return {"name": path.name, "size_bytes": st.st_size, "mtime_ns": st.st_mtime_ns}


def _sig_key(entry: dict[str, Any]) -> tuple[str, int, int]:
    return (str(entry["name"]), int(entry["size_bytes"]), int(entry["mtime_ns"]))


def read_compacted_sources(compact_file: Path) -> list[dict[str, Any]]:
    """The ``{"name", "size_bytes", "mtime_ns"}`` entries a compact file lists.

    Raises
    ------
    OSError, polars.exceptions.PolarsError, ValueError
        The footer cannot be read or the metadata is not valid JSON.
    """
    meta = pl.read_parquet_metadata(compact_file)
    raw = meta.get(SOURCES_METADATA_KEY)
    if raw is None:
        return []
    entries = json.loads(raw)
    if not isinstance(entries, list):
        raise ValueError(f"{SOURCES_METADATA_KEY} is not a list")
    return [e for e in entries if isinstance(e, dict) and {"name", "size_bytes", "mtime_ns"} <= e.keys()]


def _merged_keys(compact_files: Iterable[Path]) -> set[tuple[str, int, int]]:
    merged: set[tuple[str, int, int]] = set()
    for compact in compact_files:
        try:
            merged.update(_sig_key(e) for e in read_compacted_sources(compact))
        except (OSError, ValueError, pl.exceptions.PolarsError):
            continue  # an unreadable (or vanished) compact file hides nothing
    return merged


def effective_parquet_files(data_root: Path, underlying: str) -> list[Path]:
    """`calib.data.layout.list_parquet_files` minus sources already merged into a compact file.

    The reader-side rule for the publish-first window of `compact_day`: a file is
    dropped when a ``compact_*.parquet`` *of the same listing and directory* lists
    it with the same name, size and mtime. Only compact files seen in the listing
    count, so a compact file published after the listing never hides sources
    whose rows the reader would then not see.

    Exact for a day compacted once (the `compact_all` case): a reader sees either
    the sources or the compact file, never both. Two cases need the reader's help:

    - a source may vanish between listing and reading (the compactor unlinked
      it): on `FileNotFoundError`, list again;
    - when late files are merged into a day that already has a compact file, the
      compact file is replaced in place, so a reader that read its footer before
      the replacement and its rows after it sees the late rows twice. Readers
      that may run while such a day is recompacted dedupe on
      ``(snapshot_ts, instrument_name)``, the natural key of a row.
    """
    files = list_parquet_files(data_root, underlying)
    compacts_by_dir: dict[Path, list[Path]] = {}
    for path in files:
        if _is_compact(path):
            compacts_by_dir.setdefault(path.parent, []).append(path)
    merged_by_dir = {d: _merged_keys(c) for d, c in compacts_by_dir.items()}
    result: list[Path] = []
    for path in files:
        merged = merged_by_dir.get(path.parent)
        if merged and not _is_compact(path):
            try:
                if _sig_key(_signature(path)) in merged:
                    continue
            except FileNotFoundError:
                continue  # unlinked by the compactor: its rows are in the compact file
        result.append(path)
    return result


def _normalize(frame: pl.DataFrame) -> pl.DataFrame:
    """Cast contract columns to `HARVEST_SCHEMA` types (naive timestamps = UTC)."""
    exprs: list[pl.Expr] = []
    for name, dtype in HARVEST_SCHEMA.items():
        if name not in frame.columns:
            continue
        col = pl.col(name)
        source = frame.schema[name]
        if isinstance(dtype, pl.Datetime) and isinstance(source, pl.Datetime):
            col = (
                col.dt.replace_time_zone("UTC")
                if source.time_zone is None
                else col.dt.convert_time_zone("UTC")
            )
        exprs.append(col.cast(dtype, strict=True).alias(name))
    return frame.with_columns(exprs)


def _read_source(path: Path) -> pl.DataFrame:
    frame = pl.read_parquet(path)
    missing = [c for c in SORT_KEY if c not in frame.columns]
    if missing:
        raise ValueError(f"missing column(s) {', '.join(missing)}")
    return _normalize(frame)


def _order_columns(frame: pl.DataFrame) -> pl.DataFrame:
    known = [c for c in HARVEST_SCHEMA if c in frame.columns]
    extra = [c for c in frame.columns if c not in HARVEST_SCHEMA]
    return frame.select(known + extra)


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return  # not supported here (e.g. Windows): rename durability is best effort
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _publish(frame: pl.DataFrame, target: Path, sources: list[dict[str, Any]]) -> None:
    """Write ``frame`` to a hidden temp file, fsync, verify, rename over ``target``.

    `calib.data.layout.atomic_write_parquet` cannot attach key-value metadata,
    which the double-count rule needs, hence this twin of it.
    """
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as fh:
            frame.write_parquet(
                fh,
                compression="zstd",
                statistics=True,
                metadata={SOURCES_METADATA_KEY: json.dumps(sources)},
            )
            fh.flush()
            os.fsync(fh.fileno())
        written = pl.scan_parquet(tmp).select(pl.len()).collect().item()
        if written != frame.height:
            raise OSError(f"compact file check failed: wrote {frame.height} rows, read {written}")
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(target.parent)


def compact_day(data_root: Path, underlying: str, date: date | str) -> CompactResult:
    """Merge one UTC day's snapshot files of ``underlying`` into one compact file.

    Parameters
    ----------
    data_root
        Root of the harvested layout (``data/live_deribit``).
    underlying
        ``"BTC"`` or ``"ETH"``.
    date
        The UTC day (a `datetime.date` or ``"YYYY-MM-DD"``).

    Returns
    -------
    CompactResult
        Files merged, removed and left in place.

    Raises
    ------
    NoDataError
        The partition directory does not exist.
    InvalidInputError
        Bad ``underlying`` or ``date``.

    Notes
    -----
    Merged rows are sorted by ``(snapshot_ts, instrument_name)``, contract columns
    cast to `calib.data.schema.HARVEST_SCHEMA` (timestamps ms UTC), extra columns
    kept; zstd, row-group statistics on. Publish-first ordering and the reader
    rule are described in the module docstring.
    """
    und = _check_underlying(underlying)
    day = _as_day(date)
    target = compact_path(Path(data_root), und, day)
    directory = target.parent
    if not directory.is_dir():
        raise NoDataError(f"no partition for {und} on {day:%Y-%m-%d}: {directory} does not exist")

    listed: list[dict[str, Any]] = []
    base: pl.DataFrame | None = None
    if target.exists():
        try:
            listed = read_compacted_sources(target)
            base = _normalize(pl.read_parquet(target))
        except (OSError, ValueError, pl.exceptions.PolarsError) as e:
            # Never overwrite a compact file we cannot read: it may hold the only copy.
            return CompactResult(
                underlying=und,
                day=day,
                path=target,
                n_sources_merged=0,
                n_rows=0,
                skipped=((target, f"unreadable compact file: {e}"),),
            )
    listed_keys = {_sig_key(e) for e in listed}

    stale: list[Path] = []
    new_frames: list[pl.DataFrame] = []
    new_sources: list[tuple[Path, dict[str, Any]]] = []
    skipped: list[tuple[Path, str]] = []
    candidates = sorted(
        p
        for p in directory.glob("*.parquet")
        if p.is_file() and not p.name.startswith(".") and p != target
    )
    for path in candidates:
        try:
            sig = _signature(path)
        except FileNotFoundError:
            continue
        if _sig_key(sig) in listed_keys:
            stale.append(path)  # merged by an earlier run that stopped before unlinking
            continue
        try:
            frame = _read_source(path)
            if _sig_key(_signature(path)) != _sig_key(sig):
                raise ValueError("file changed while being read; will retry next run")
        except (OSError, ValueError, pl.exceptions.PolarsError) as e:
            skipped.append((path, f"{type(e).__name__}: {e}"))
            continue
        new_frames.append(frame)
        new_sources.append((path, sig))

    n_rows = base.height if base is not None else 0
    if new_frames:
        parts = ([base] if base is not None else []) + new_frames
        merged = _order_columns(pl.concat(parts, how="diagonal_relaxed")).sort(list(SORT_KEY))
        _publish(merged, target, listed + [sig for _, sig in new_sources])
        n_rows = merged.height

    removed: list[Path] = []
    not_removed: list[tuple[Path, str]] = []
    for path in stale + [p for p, _ in new_sources]:
        try:
            path.unlink()
            removed.append(path)
        except FileNotFoundError:
            removed.append(path)
        except OSError as e:
            not_removed.append((path, str(e)))
    return CompactResult(
        underlying=und,
        day=day,
        path=target if target.exists() else None,
        n_sources_merged=len(new_frames),
        n_rows=n_rows,
        removed=tuple(removed),
        skipped=tuple(skipped),
        not_removed=tuple(not_removed),
    )


def compact_all(
    data_root: Path,
    underlying: str,
    *,
    older_than_today: bool = True,
    today: date | None = None,
) -> list[CompactResult]:
    """Compact every day partition of ``underlying``.

    Parameters
    ----------
    data_root, underlying
        As in `compact_day`.
    older_than_today
        Only compact completed UTC days (the harvester is still writing today's).
    today
        The UTC date considered "today" (default: now); for tests.

    Returns
    -------
    list of CompactResult
        One per ``date=YYYY-MM-DD`` partition visited, oldest first.

    Raises
    ------
    NoDataError
        ``<data_root>/<UNDERLYING>`` does not exist.
    """
    und = _check_underlying(underlying)
    base = Path(data_root) / und
    if not base.is_dir():
        raise NoDataError(f"no harvested data for {und}: {base} does not exist")
    today = today or datetime.now(UTC).date()
    days: list[date] = []
    for child in base.iterdir():
        if not child.is_dir() or not child.name.startswith("date="):
            continue
        try:
            day = date.fromisoformat(child.name.removeprefix("date="))
        except ValueError:
            continue
        if older_than_today and day >= today:
            continue
        days.append(day)
    return [compact_day(data_root, und, day) for day in sorted(days)]

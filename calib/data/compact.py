"""Merge a day's many small snapshot files into one compact Parquet file.

A harvester writing every minute leaves ~1,440 files per underlying per day;
readers are faster on one sorted file with row-group statistics. `compact_day`
turns ``<root>/<UND>/date=YYYY-MM-DD/*.parquet`` into
``<root>/<UND>/date=YYYY-MM-DD/compact_YYYY-MM-DD.parquet``.

How a reader never loses a row and never double counts one
-----------------------------------------------------------
There is no atomic "swap N files for 1" on a POSIX filesystem, so one of two
windows must exist:

1. *delete first* (write merged under a hidden name, unlink the sources, rename
   the merged file in): no double count, but between the unlinks and the rename
   the rows are missing, and a crash in that window hides them until recovery;
2. *publish first* (what this module does): write the merged file under a hidden
   temp name, fsync it, verify its row count, rename it in, fsync the directory,
   and only then unlink the sources. No row is ever missing and a crash at any
   point loses nothing; between the rename and the unlinks (or after a crash
   there) the rows are visible twice, which the reader-side rule removes.

Reader-side rule (`effective_parquet_files`): the compact file's Parquet
key-value metadata ``calib.compacted_from`` lists every file it absorbed as
``{"name", "size_bytes", "mtime_ns"}``; a reader drops a file that a compact file
*of the same listing and directory* lists with the same size and mtime (size and
mtime, not just the name, so a new file reusing a merged name is never hidden).
A file may vanish between listing and reading; on `FileNotFoundError` the
reader lists again. Rows also carry a natural key ``(snapshot_ts,
instrument_name)`` that a reader can ``unique()`` on as a belt and braces.

Files are immutable once visible: a path never gets new content. This matters
because polars reads a Parquet footer and its pages in separate opens, so a file
replaced in place between the two gives a corrupt read. Hence when late files
arrive for a day that is already compacted, the new merged file gets the next
generation name ``compact_YYYY-MM-DD_v2.parquet`` (``_v3`` ...), lists the old
compact file among its sources, and the old one is unlinked after it.

Re-running is idempotent: files already listed by a compact file are only
unlinked (crash recovery). Unreadable or incompatible files are left in place
and reported; an unreadable compact file stops work on that day (it may hold the
only copy of its rows). One compactor per partition at a time is assumed; the
harvester may keep writing new files meanwhile.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import polars as pl

from calib._typing import UNDERLYINGS
from calib.data.index_spot import index_spot_metadata
from calib.data.layout import PARQUET_COMPRESSION, list_parquet_files, partition_dir, remove_stale_temp_files
from calib.data.schema import HARVEST_SCHEMA, with_parsed_columns
from calib.errors import CalibError, InvalidInputError, NoDataError

COMPACT_STEM = "compact"
SOURCES_METADATA_KEY = "calib.compacted_from"
SORT_KEY: tuple[str, ...] = ("snapshot_ts", "instrument_name")
_COMPACT_NAME = re.compile(rf"^{COMPACT_STEM}_(\d{{4}}-\d{{2}}-\d{{2}})(?:_v(\d+))?\.parquet$")

_SigKey = tuple[str, int, int]


class CompactionError(CalibError):
    """A day's compact file could not be written (disk full, permissions); its files are untouched."""

_READ_ERRORS = (OSError, ValueError, pl.exceptions.PolarsError)


@dataclass(frozen=True, slots=True, kw_only=True)
class CompactResult:
    """What `compact_day` did to one partition.

    Attributes
    ----------
    underlying, day
        The partition.
    path
        The current compact file (new or pre-existing), or None if there is none.
    n_sources_merged
        Snapshot files merged in this run (previous compact files not counted).
    n_rows
        Rows in the compact file after this run.
    removed
        Files unlinked: merged now, or merged by an earlier interrupted run.
    skipped
        ``(file, reason)`` for files left in place: unreadable, missing a key
        column, with columns of an incompatible type, or an unreadable compact file.
    not_removed
        ``(file, reason)`` for merged files that could not be unlinked; the compact
        file lists them, so `effective_parquet_files` already ignores them.
    stale_temp_removed
        Hidden temp files a killed writer left in the partition, deleted now.
    """

    underlying: str
    day: date
    path: Path | None
    n_sources_merged: int
    n_rows: int
    removed: tuple[Path, ...] = ()
    skipped: tuple[tuple[Path, str], ...] = ()
    not_removed: tuple[tuple[Path, str], ...] = ()
    stale_temp_removed: tuple[Path, ...] = ()

    @property
    def changed(self) -> bool:
        """True when this run wrote a compact file or removed a file."""
        return self.n_sources_merged > 0 or bool(self.removed) or bool(self.stale_temp_removed)

    def describe(self) -> str:
        """One log line."""
        where = self.path if self.path is not None else "no compact file"
        text = (
            f"{self.underlying} {self.day:%Y-%m-%d}: merged {self.n_sources_merged} file(s), "
            f"removed {len(self.removed)}, {self.n_rows} rows in {where}"
        )
        for path, reason in self.skipped:
            text += f"; skipped {path.name}: {reason}"
        for path, reason in self.not_removed:
            text += f"; could not remove {path.name}: {reason}"
        if self.stale_temp_removed:
            text += f"; removed {len(self.stale_temp_removed)} stale temp file(s)"
        return text


def _day_start(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


def compact_path(data_root: Path, underlying: str, day: date, generation: int = 1) -> Path:
    """``<root>/<UND>/date=YYYY-MM-DD/compact_YYYY-MM-DD.parquet`` (``_vN`` for N > 1)."""
    suffix = "" if generation <= 1 else f"_v{generation}"
    name = f"{COMPACT_STEM}_{day:%Y-%m-%d}{suffix}.parquet"
    return partition_dir(data_root, underlying, _day_start(day)) / name


def _compact_generation(path: Path) -> int | None:
    """Generation of a compact file name (1 for the plain name), None if not one."""
    match = _COMPACT_NAME.match(path.name)
    if match is None:
        return None
    return int(match.group(2)) if match.group(2) else 1


def _is_compact(path: Path) -> bool:
    return _compact_generation(path) is not None


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


def _signature(path: Path) -> dict[str, Any]:
    st = path.stat()
    return {"name": path.name, "size_bytes": st.st_size, "mtime_ns": st.st_mtime_ns}


def _sig_key(entry: dict[str, Any]) -> _SigKey:
    return (str(entry["name"]), int(entry["size_bytes"]), int(entry["mtime_ns"]))


def read_compacted_sources(compact_file: Path) -> list[dict[str, Any]]:
    """The ``{"name", "size_bytes", "mtime_ns"}`` entries a compact file lists.

    Raises
    ------
    OSError, ValueError, polars.exceptions.PolarsError
        The footer cannot be read or the metadata is not a JSON list.
    """
    raw = pl.read_parquet_metadata(compact_file).get(SOURCES_METADATA_KEY)
    if raw is None:
        return []
    entries = json.loads(raw)
    if not isinstance(entries, list):
        raise ValueError(f"{SOURCES_METADATA_KEY} is not a list")
    required = {"name", "size_bytes", "mtime_ns"}
    return [e for e in entries if isinstance(e, dict) and required <= e.keys()]


def _merged_keys(compact_files: Iterable[Path]) -> set[_SigKey]:
    merged: set[_SigKey] = set()
    for compact in compact_files:
        try:
            merged.update(_sig_key(e) for e in read_compacted_sources(compact))
        except _READ_ERRORS:
            continue  # an unreadable (or vanished) compact file hides nothing
    return merged


def effective_parquet_files(data_root: Path, underlying: str, *, days: tuple[date, date] | None = None) -> list[Path]:
    """`calib.data.layout.list_parquet_files` minus files a compact file already absorbed.

    The reader-side rule that keeps `compact_day`'s publish-first window from
    double counting: a file is dropped when a compact file *of the same listing
    and directory* lists it with the same name, size and mtime. Only compact
    files seen in the listing count, so a compact file published after the
    listing never hides files whose rows the reader would then miss. Compact and
    snapshot files are immutable, so what the footer said is what gets read.

    A listed file can vanish before it is read (the compactor unlinked it): on
    `FileNotFoundError`, list again.
    """
    files = list_parquet_files(data_root, underlying, days=days)
    compacts_by_dir: dict[Path, list[Path]] = {}
    for path in files:
        if _is_compact(path):
            compacts_by_dir.setdefault(path.parent, []).append(path)
    merged_by_dir = {d: _merged_keys(c) for d, c in compacts_by_dir.items()}
    result: list[Path] = []
    for path in files:
        merged = merged_by_dir.get(path.parent)
        if merged:
            try:
                if _sig_key(_signature(path)) in merged:
                    continue
            except FileNotFoundError:
                continue  # unlinked by the compactor: a listed compact file holds its rows
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


def _read_rows(path: Path) -> pl.DataFrame:
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
    """Write ``frame`` to a hidden temp file, fsync, verify, rename to ``target``.

    A twin of `calib.data.layout.atomic_write_parquet` that also attaches the
    ``calib.compacted_from`` key-value metadata the reader rule needs.
    """
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as fh:
            frame.write_parquet(
                fh,
                compression=PARQUET_COMPRESSION,
                statistics=True,
                metadata={SOURCES_METADATA_KEY: json.dumps(sources), **index_spot_metadata(frame)},
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
    CompactionError
        The compact file could not be written (e.g. disk full); nothing was
        published or removed, the temp file is gone.

    Notes
    -----
    Merged rows are sorted by ``(snapshot_ts, instrument_name)``; contract columns
    are cast to `calib.data.schema.HARVEST_SCHEMA` (timestamps ms UTC), extra
    columns kept; LZ4 (`PARQUET_COMPRESSION`), row-group statistics on. Only the partition directory's
    own files are merged (not subdirectories). Ordering, crash safety and the
    reader rule are described in the module docstring.
    """
    und = _check_underlying(underlying)
    day = _as_day(date)
    directory = compact_path(Path(data_root), und, day).parent
    if not directory.is_dir():
        raise NoDataError(f"no partition for {und} on {day:%Y-%m-%d}: {directory} does not exist")
    stale_temp = tuple(remove_stale_temp_files(directory))

    files = sorted(
        p for p in directory.glob("*.parquet") if p.is_file() and not p.name.startswith(".")
    )
    compacts = [p for p in files if _is_compact(p)]
    listed: dict[_SigKey, dict[str, Any]] = {}
    for compact in compacts:
        try:
            listed.update((_sig_key(e), e) for e in read_compacted_sources(compact))
        except _READ_ERRORS as e:
            return _unreadable_compact(und, day, compact, e, stale_temp)

    stale: list[Path] = []  # absorbed by a compact file already
    pending: list[tuple[Path, dict[str, Any], bool]] = []  # (file, signature, is_compact)
    for path in files:
        try:
            sig = _signature(path)
        except FileNotFoundError:
            continue
        if _sig_key(sig) in listed:
            stale.append(path)
        else:
            pending.append((path, sig, _is_compact(path)))

    current = [p for p, _, is_compact in pending if is_compact]
    new_sources = [(p, sig) for p, sig, is_compact in pending if not is_compact]
    frames: list[pl.DataFrame] = []
    absorbed: list[tuple[Path, dict[str, Any]]] = []
    skipped: list[tuple[Path, str]] = []
    merged_count = 0
    if new_sources or len(current) > 1:
        for path, sig, is_compact in pending:
            try:
                frame = _read_rows(path)
                if _sig_key(_signature(path)) != _sig_key(sig):
                    raise ValueError("file changed while being read; will retry next run")
            except _READ_ERRORS as e:
                if is_compact:
                    return _unreadable_compact(und, day, path, e, stale_temp)
                skipped.append((path, f"{type(e).__name__}: {e}"))
                continue
            frames.append(frame)
            absorbed.append((path, sig))
            merged_count += 0 if is_compact else 1

    target = current[0] if len(current) == 1 else None
    n_rows = _row_count(target)
    if merged_count > 0 or len(current) > 1:
        generation = max((g for p in files if (g := _compact_generation(p))), default=0) + 1
        target = compact_path(Path(data_root), und, day, generation)
        while target.exists():  # never give an existing path new content
            generation += 1
            target = compact_path(Path(data_root), und, day, generation)
        # Sources from other tools may lack expiry/strike/type (minimal layout): the compact file carries them.
        merged = _order_columns(with_parsed_columns(pl.concat(frames, how="diagonal_relaxed"))).sort(list(SORT_KEY))
        try:
            _publish(merged, target, [*listed.values(), *(sig for _, sig in absorbed)])
        except (OSError, pl.exceptions.PolarsError) as e:
            raise CompactionError(
                f"could not write {target.name} for {und} {day:%Y-%m-%d} ({merged.height} rows from "
                f"{len(absorbed)} file(s)): {type(e).__name__}: {e}; the day's files are left as they are"
            ) from e
        n_rows = merged.height
    else:
        absorbed = []

    removed: list[Path] = []
    not_removed: list[tuple[Path, str]] = []
    for path in [*stale, *(p for p, _ in absorbed)]:
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
        path=target,
        n_sources_merged=merged_count,
        n_rows=n_rows,
        removed=tuple(removed),
        skipped=tuple(skipped),
        not_removed=tuple(not_removed),
        stale_temp_removed=stale_temp,
    )


def _row_count(path: Path | None) -> int:
    if path is None:
        return 0
    try:
        return int(pl.scan_parquet(path).select(pl.len()).collect().item())
    except _READ_ERRORS:
        return 0


def _unreadable_compact(und: str, day: date, path: Path, error: BaseException,
                        stale_temp: tuple[Path, ...]) -> CompactResult:
    # Never touch a day whose compact file we cannot read: it may hold the only copy.
    return CompactResult(
        underlying=und,
        day=day,
        path=path,
        n_sources_merged=0,
        n_rows=0,
        skipped=((path, f"unreadable compact file: {type(error).__name__}: {error}"),),
        stale_temp_removed=stale_temp,
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

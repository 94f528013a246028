"""`import_tardis`: files -> CSV blocks -> typed rows -> snapshots, with progress and the result."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from datetime import timedelta
from pathlib import Path

import polars as pl

from calib._typing import UNDERLYINGS
from calib.data.tardis.classify import Classifier
from calib.data.tardis.common import (
    EVERY_PATTERN,
    EVERY_UNITS_S,
    MIN_INDEX_TOLERANCE,
    PROGRESS_EVERY_ROWS,
    REQUIRED_INPUT,
    TARDIS_OPTIONS_CHAIN_COLUMNS,
    IndexFallback,
    add_count,
    to_us,
)
from calib.data.tardis.csv_stream import iter_csv_blocks
from calib.data.tardis.index_series import IndexSeries
from calib.data.tardis.result import TardisImportResult
from calib.data.tardis.snapshots import SnapshotWriter
from calib.errors import InvalidInputError, NoDataError


def parse_every(text: str) -> timedelta:
    """Parse a snapshot interval: ``"30s"``, ``"5m"``, ``"1h"``, ``"1d"`` or bare seconds ``"300"``.

    Raises
    ------
    InvalidInputError
        When the text is not a positive whole number with an optional s/m/h/d unit.
    """
    match = EVERY_PATTERN.match(text)
    if match is None or int(match.group(1)) <= 0:
        raise InvalidInputError(
            f"`every` must be a positive interval like 30s, 5m, 1h or 300 (seconds); got {text!r}"
        )
    return timedelta(seconds=int(match.group(1)) * EVERY_UNITS_S[match.group(2).lower()])


def import_tardis(
    paths: Sequence[Path],
    *,
    underlying: str,
    every: timedelta = timedelta(minutes=5),
    data_root: Path,
    index_file: Path | None = None,
    batch_rows: int = 500_000,
    progress: Callable[[str], None] | None = None,
    index_fallback: IndexFallback = "nearest_forward",
    reorder_window: timedelta = timedelta(seconds=60),
    snapshots_per_file: int = 72,
) -> TardisImportResult:
    """Import Tardis `options_chain` files as harvested snapshots under `data_root`.

    Parameters
    ----------
    paths
        Tardis `options_chain` CSV files (``.csv`` or ``.csv.gz``), read in the
        order given; consecutive days should be passed together so the state
        carries over midnight.
    underlying
        ``"BTC"`` or ``"ETH"``; other currencies and linear ``<COIN>_USDC``
        options are skipped and counted.
    every
        Snapshot interval; boundaries are the multiples of `every` since the epoch.
    data_root
        Harvest root: files go to ``<data_root>/<UNDERLYING>/date=YYYY-MM-DD/
        tardis_YYYYMMDDTHHMMSSZ.parquet`` (named after their first snapshot),
        written atomically, in exactly `HARVEST_SCHEMA`.
    index_file
        Optional CSV with a microsecond `timestamp` column and an `index_price`
        (Tardis `derivative_ticker`) or `price` column; each snapshot takes the
        last value at or before its boundary, if not older than
        ``max(every, 5 min)``. With a `symbol` column only rows whose symbol
        starts with ``<UNDERLYING>-`` are used.
    batch_rows
        Rows read per state update; bounds memory (about 440 MB peak at the
        default, 330 MB at 100_000). It never changes the output as long as
        timestamps stay within `reorder_window` of file order.
    progress
        Called with one human-readable line at each file start and every ~1M rows.
    index_fallback
        Without `index_file`: ``"nearest_forward"`` (default) writes the
        forward of the nearest live expiry (the latest update among its
        instruments) as `index_price`, a proxy for spot that is within the
        basis of a days-away future; the result's `index_source` says so.
        ``"none"`` leaves it null so readers apply their own fallback and
        grade the data as degraded (SPEC section 2).
    reorder_window
        How far exchange timestamps may run out of file order (Tardis rows
        follow arrival time, and a day file opens with each instrument's
        state stamped seconds before midnight). A boundary is written once a
        row this much later has been seen; rows arriving after their boundary
        was written are skipped as `out_of_order`.
    snapshots_per_file
        Snapshots buffered per output file (files also never span a UTC day);
        windows are aligned to the epoch so re-imports produce the same names.

    Returns
    -------
    TardisImportResult

    Raises
    ------
    InvalidInputError
        Bad arguments, or a file that is not a Tardis `options_chain` CSV
        (missing columns, unreadable stream).
    NoDataError
        A path that does not exist.

    Notes
    -----
    Semantics, per boundary ``B``: an instrument's state is its update with
    the greatest `timestamp` ``<= B`` (ties: the later row in the file); the
    snapshot holds every instrument with ``expiration > B`` whose state has a
    positive mark. The first boundary is the first multiple of `every`
    strictly after the first row; the last one is at or before the last row.
    A boundary whose interval ``(B - every, B]`` holds no row at all is not
    written (counted in `intervals_without_data`) rather than repeating a
    stale chain.
    """
    und = _check_underlying(underlying)
    if not paths:
        raise InvalidInputError(
            "`paths` must name at least one Tardis options_chain file; got none"
        )
    if every < timedelta(seconds=1):
        raise InvalidInputError(f"`every` must be at least 1 second; got {every}")
    if batch_rows < 1:
        raise InvalidInputError(f"`batch_rows` must be a positive row count; got {batch_rows}")
    if snapshots_per_file < 1:
        raise InvalidInputError(f"`snapshots_per_file` must be positive; got {snapshots_per_file}")
    if reorder_window < timedelta(0):
        raise InvalidInputError(f"`reorder_window` must not be negative; got {reorder_window}")
    if index_fallback not in ("nearest_forward", "none"):
        raise InvalidInputError(
            f"`index_fallback` must be one of nearest_forward, none; got {index_fallback!r}"
        )
    files = [Path(p) for p in paths]
    for path in [*files, *([Path(index_file)] if index_file is not None else [])]:
        if not path.is_file():
            raise NoDataError(f"Tardis file not found: {path}")

    every_us = to_us(every)
    skipped: dict[str, int] = {}
    index = (
        IndexSeries.from_file(
            Path(index_file),
            underlying=und,
            every_us=every_us,
            tolerance_us=to_us(max(every, MIN_INDEX_TOLERANCE)),
            batch_rows=batch_rows,
            skipped=skipped,
        )
        if index_file is not None
        else None
    )
    importer = SnapshotWriter(
        underlying=und,
        every_us=every_us,
        reorder_us=to_us(reorder_window),
        data_root=Path(data_root),
        index=index,
        index_fallback=index_fallback,
        snapshots_per_file=snapshots_per_file,
        skipped=skipped,
    )
    say = progress or (lambda _line: None)
    started = time.perf_counter()
    next_report = PROGRESS_EVERY_ROWS
    bad_lines: dict[str, int] = {}  # rows the CSV parser rejected (wrong field count)
    classify = Classifier(und, every_us)
    # Raw text is typed and filtered block by block; only this underlying's typed rows
    # are gathered into batches of `batch_rows` read rows, then merged into the state.
    typed: list[pl.DataFrame] = []
    n_raw = 0
    for path in files:
        say(f"tardis: reading {path}")
        for raw in iter_csv_blocks(
            path, TARDIS_OPTIONS_CHAIN_COLUMNS, REQUIRED_INPUT, batch_rows, bad_lines
        ):
            importer.rows_parsed += raw.height
            n_raw += raw.height
            typed.append(classify(raw, skipped))
            if n_raw >= batch_rows:
                importer.feed(classify.finish(typed, skipped))
                typed, n_raw = [], 0
            if importer.rows_parsed >= next_report:
                say(_progress_line(importer, skipped, started))
                next_report += PROGRESS_EVERY_ROWS
        if typed:  # a file ends a batch: rows of the next file come after it
            importer.feed(classify.finish(typed, skipped))
            typed, n_raw = [], 0
    importer.finish()
    n_bad_lines = bad_lines.get("unparsable", 0)
    add_count(skipped, "unparsable", n_bad_lines)
    say(_progress_line(importer, skipped, started) + " (done)")
    return importer.result(skipped, rows_read=importer.rows_parsed + n_bad_lines)


# --------------------------------------------------------------------------- reading


def _check_underlying(underlying: str) -> str:
    und = str(underlying).strip().upper()
    if und not in UNDERLYINGS:
        raise InvalidInputError(
            f"`underlying` must be one of {', '.join(UNDERLYINGS)}; got {underlying!r}"
        )
    return und


def _progress_line(importer: SnapshotWriter, skipped: dict[str, int], started: float) -> str:
    elapsed = max(time.perf_counter() - started, 1e-9)
    n_skipped = sum(skipped.values())
    return (
        f"tardis: {importer.rows_parsed:,} rows read ({importer.rows_parsed / elapsed:,.0f}/s), "
        f"{n_skipped:,} skipped, {importer.snapshots_written:,} snapshots written"
    )

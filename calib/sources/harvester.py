"""Poll Deribit option chains on a fixed schedule and write one Parquet file per snapshot.

Each snapshot of each underlying becomes
``<data_root>/<UND>/date=YYYY-MM-DD/snapshot_<YYYYMMDDTHHMMSSZ>.parquet`` (SPEC
section 2), written atomically by `calib.data.layout.atomic_write_parquet`
(hidden temp file in the same directory, fsync, rename), so a reader never sees a
partial file. The ``index_price`` column is filled from a ``get_index_price`` call
made right after the book summary.

The loop keeps a fixed grid ``start + k * interval_s`` on a monotonic clock, so
slow polls never make it drift; a poll that overruns whole ticks skips them (and
warns) instead of firing a burst.

One bad poll never stops a harvest: any failure of one underlying's poll (the
source, a full disk, a polars write error) is logged with its error class and
the loop goes on. Each poll logs its outcome, latency, retries and back-off.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Protocol, runtime_checkable

import polars as pl

from calib._typing import UNDERLYINGS
from calib.data.layout import atomic_write_parquet, snapshot_path
from calib.errors import InvalidInputError, SourceError
from calib.sources.deribit import RetryEvent


class ChainSource(Protocol):
    """What the harvester needs from a client (`calib.sources.deribit.DeribitClient`)."""

    def book_summary(self, currency: str) -> pl.DataFrame: ...

    def index_price(self, currency: str) -> float: ...


@runtime_checkable
class RetryCounting(Protocol):
    """A source that counts its retries (`DeribitClient` does), so each poll can report them."""

    retries: int
    backoff_total_s: float


#: Columns a quote needs to be any use (SPEC section 2); a chain where no row has them is not written.
_PRICED = ("mark_price", "underlying_price")


@dataclass(frozen=True, slots=True, kw_only=True)
class SnapshotLog:
    """Outcome of one poll of one underlying.

    Attributes
    ----------
    underlying
        ``"BTC"`` or ``"ETH"``.
    snapshot_ts
        UTC harvest time stamped on the rows (None when the poll failed first).
    n_rows
        Option rows written (0 on failure).
    latency_ms
        Wall time of the book-summary and index calls, in milliseconds.
    path
        The file written, or None on failure.
    error
        Failure message, or None on success.
    error_class
        The failure's exception class (``SourceError``, ``OSError``, ``ComputeError`` ...).
    retries, backoff_s
        Retries the source made during this poll and the seconds it waited between them.
    n_unpriced
        Rows written without a ``mark_price`` or ``underlying_price``.
    """

    underlying: str
    snapshot_ts: datetime | None
    n_rows: int
    latency_ms: float
    path: Path | None
    error: str | None = None
    error_class: str | None = None
    retries: int = 0
    backoff_s: float = 0.0
    n_unpriced: int = 0

    @property
    def ok(self) -> bool:
        """True when a file was written."""
        return self.error is None and self.path is not None

    def describe(self) -> str:
        """One log line."""
        retried = (f", {self.retries} {'retry' if self.retries == 1 else 'retries'} "
                   f"({self.backoff_s:.1f} s back-off)" if self.retries else "")
        if self.ok:
            unpriced = f" ({self.n_unpriced} without mark/underlying price)" if self.n_unpriced else ""
            return f"{self.underlying}: {self.n_rows} rows{unpriced}, {self.latency_ms:.0f} ms{retried} -> {self.path}"
        return (f"{self.underlying}: poll failed after {self.latency_ms:.0f} ms{retried}: "
                f"[{self.error_class or 'Error'}] {self.error}")


@dataclass(frozen=True, slots=True, kw_only=True)
class HarvestSummary:
    """What `run_harvester` did before it stopped."""

    iterations: int
    snapshots_written: int
    failures: int
    rows_written: int
    skipped_ticks: int
    interrupted: bool

    def describe(self) -> str:
        """One log line."""
        how = "stopped by user" if self.interrupted else "done"
        return (
            f"harvester {how}: {self.iterations} polls, {self.snapshots_written} snapshots "
            f"({self.rows_written} rows), {self.failures} failed, {self.skipped_ticks} ticks skipped"
        )


def _stderr_log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _check_underlyings(underlyings: Iterable[str]) -> tuple[str, ...]:
    result = tuple(underlyings)
    if not result:
        raise InvalidInputError("`underlyings` must name at least one of BTC, ETH; got none")
    bad = [u for u in result if u not in UNDERLYINGS]
    if bad:
        raise InvalidInputError(
            f"`underlyings` must be among {', '.join(UNDERLYINGS)}; got {', '.join(map(repr, bad))}"
        )
    return result


def _free_snapshot_path(data_root: Path, underlying: str, ts: datetime) -> Path:
    """`snapshot_path`, with a numbered stem if a file for that second already exists."""
    path = snapshot_path(data_root, underlying, ts)
    n = 1
    while path.exists():
        n += 1
        path = snapshot_path(data_root, underlying, ts, stem=f"snapshot{n}")
    return path


def harvest_underlying(client: ChainSource, underlying: str, data_root: Path) -> SnapshotLog:
    """Poll one underlying (book summary, then index) and write its snapshot file.

    Any failure (the source's `SourceError`, a full disk's `OSError` or polars
    `ComputeError`, anything else) is returned in the log with its class, not
    raised, so one bad poll never stops a harvest; only KeyboardInterrupt and
    other BaseExceptions pass. A chain in which no option has a mark and an
    underlying price is a failure, not a file.
    """
    t0 = time.perf_counter()
    counted = client if isinstance(client, RetryCounting) else None
    retries0, backoff0 = (counted.retries, counted.backoff_total_s) if counted else (0, 0.0)
    ts: datetime | None = None
    n_unpriced = 0

    def log(*, n_rows: int, latency_ms: float, path: Path | None, error: str | None = None,
            error_class: str | None = None) -> SnapshotLog:
        return SnapshotLog(
            underlying=underlying, snapshot_ts=ts, n_rows=n_rows, latency_ms=latency_ms, path=path, error=error,
            error_class=error_class, n_unpriced=n_unpriced if path is not None else 0,
            retries=counted.retries - retries0 if counted else 0,
            backoff_s=counted.backoff_total_s - backoff0 if counted else 0.0)

    try:
        chain = client.book_summary(underlying)
        index_usd = client.index_price(underlying)
        latency_ms = (time.perf_counter() - t0) * 1000.0
        if chain.height == 0:
            raise SourceError(f"Deribit listed no {underlying} options")
        ts = chain["snapshot_ts"][0]
        priced = [c for c in _PRICED if c in chain.columns]
        n_priced = chain.select(pl.all_horizontal(pl.col(priced).is_not_null()).sum()).item() if priced else 0
        if not n_priced:
            raise SourceError(f"Deribit listed {chain.height} {underlying} options but none has a "
                              "mark_price and underlying_price; nothing written")
        n_unpriced = chain.height - int(n_priced)
        chain = chain.with_columns(pl.lit(index_usd, dtype=pl.Float64).alias("index_price"))
        assert ts is not None
        path = atomic_write_parquet(chain, _free_snapshot_path(Path(data_root), underlying, ts))
    except Exception as e:  # one bad poll never stops a harvest
        return log(n_rows=0, latency_ms=(time.perf_counter() - t0) * 1000.0, path=None,
                   error=str(e) or type(e).__name__, error_class=type(e).__name__)
    return log(n_rows=chain.height, latency_ms=latency_ms, path=path)


def retry_logger(log: Callable[[str], None] = _stderr_log) -> Callable[[RetryEvent], None]:
    """An ``on_retry`` callback for `DeribitClient` that logs each retry as it starts waiting."""
    return lambda event: log(f"retrying {event.describe()}")


def harvest_once(
    client: ChainSource, underlyings: Sequence[str], data_root: Path
) -> list[SnapshotLog]:
    """Take one snapshot of each underlying.

    Parameters
    ----------
    client
        A `calib.sources.deribit.DeribitClient` (or anything with ``book_summary``
        and ``index_price``).
    underlyings
        E.g. ``["BTC", "ETH"]``.
    data_root
        Root of the harvested layout, e.g. ``data/live_deribit``.

    Returns
    -------
    list of SnapshotLog
        One per underlying, in order; failed polls carry ``error`` and no file.
    """
    return [harvest_underlying(client, u, Path(data_root)) for u in _check_underlyings(underlyings)]


def run_harvester(
    client: ChainSource,
    underlyings: Sequence[str],
    data_root: Path,
    interval_s: float,
    *,
    once: bool = False,
    max_iterations: int | None = None,
    sleep: Callable[[float], None] = time.sleep,
    log: Callable[[str], None] = _stderr_log,
    clock: Callable[[], float] = time.monotonic,
    compact: bool = True,
    today: Callable[[], date] = lambda: datetime.now(UTC).date(),
) -> HarvestSummary:
    """Harvest every ``interval_s`` seconds until stopped.

    Parameters
    ----------
    client, underlyings, data_root
        As in `harvest_once`.
    interval_s
        Seconds between poll starts. Poll ``k`` starts at ``start + k * interval_s``
        (monotonic clock): no drift. Ticks missed by a slow poll are skipped.
    once
        Take one snapshot per underlying and return (same as ``max_iterations=1``).
    max_iterations
        Stop after this many polls (None = run until Ctrl-C).
    sleep, log, clock
        Injectable for tests; ``log`` gets one line per snapshot or failure
        (default: stderr).
    compact, today
        Compaction is automatic: at start and whenever the UTC day (``today()``)
        rolls over, every finished day's one-file-per-snapshot partition is
        merged into one file (`calib.data.compact.compact_all`), so readers of a
        long harvest open one file per day instead of 288+ (a day of small files
        scans ~7x slower than the same day compacted). A compaction failure is
        logged, never fatal.

    Returns
    -------
    HarvestSummary
        Counts, and ``interrupted=True`` when Ctrl-C (KeyboardInterrupt) stopped
        it; the interrupt is absorbed (no traceback), and a snapshot being
        written at that moment is either complete or absent.
    """
    names = _check_underlyings(underlyings)
    if not interval_s > 0:
        raise InvalidInputError(f"`interval_s` must be positive; got {interval_s}")
    if max_iterations is not None and max_iterations < 1:
        raise InvalidInputError(f"`max_iterations` must be >= 1 or None; got {max_iterations}")
    limit = 1 if once else max_iterations

    iterations = written = failures = rows = skipped = 0
    interrupted = False
    start = clock()
    tick = 0
    log(f"harvesting {', '.join(names)} every {interval_s:g} s into {data_root}")
    compacted_for: date | None = None

    def compact_finished_days() -> None:
        nonlocal compacted_for
        day = today()
        if not compact or day == compacted_for:
            return
        compacted_for = day
        from calib.data.compact import compact_all

        for name in names:
            if not (Path(data_root) / name).is_dir():
                continue  # nothing harvested yet (a fresh data dir): nothing to compact, nothing failed
            try:
                for res in compact_all(Path(data_root), name, today=day):
                    if res.changed:
                        log(res.describe())
            except Exception as e:  # a failed compaction leaves the small files readable
                log(f"compaction of {name} failed (files left as they are): {type(e).__name__}: {e}")

    try:
        while limit is None or iterations < limit:
            compact_finished_days()
            poll_start = clock()
            for name in names:
                entry = harvest_underlying(client, name, Path(data_root))
                log(entry.describe())
                if entry.ok:
                    written += 1
                    rows += entry.n_rows
                else:
                    failures += 1
            iterations += 1
            if limit is not None and iterations >= limit:
                break
            now = clock()
            tick += 1
            behind = int((now - start) // interval_s) + 1 - tick
            if behind > 0:
                skipped += behind
                tick += behind
                log(f"WARNING: poll took {now - poll_start:.1f} s, longer than the {interval_s:g} s interval; "
                    f"skipped {behind} tick(s)")
            sleep(max(0.0, start + tick * interval_s - clock()))
    except KeyboardInterrupt:
        interrupted = True
    summary = HarvestSummary(
        iterations=iterations,
        snapshots_written=written,
        failures=failures,
        rows_written=rows,
        skipped_ticks=skipped,
        interrupted=interrupted,
    )
    log(summary.describe())
    return summary

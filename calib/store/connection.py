"""Short-lived DuckDB connections with bounded retry on lock conflicts.

DuckDB allows one read-write process or many read-only ones, never both,
and fails at once with IOException "Could not set lock on file". So every
connection here lives for one query or one write transaction, and opening
retries with backoff for a bounded time before a clear StoreError.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import duckdb

from calib.errors import StoreError, StoreLockedError

# Files stay readable by the DuckDB 1.5 CLI (`pip install duckdb-cli==1.5.6`).
STORAGE_COMPATIBILITY = "v1.5.0"
LOCK_RETRY_SECONDS = 10.0


def _is_lock_error(e: Exception) -> bool:
    text = str(e).lower()
    return "lock" in text or "conflicting" in text or "already open" in text


# Writer preference. DuckDB gives the file to one writer or to many readers, and a writer that
# finds readers can only retry: with reads arriving back to back (an agent polling the HTTP API)
# it could retry for its whole LOCK_RETRY_SECONDS and lose the run. A waiting writer touches
# this sidecar file on every retry; a reader about to open waits while it is fresh (a writer
# killed while waiting leaves a stale one, ignored after WRITER_INTENT_FRESH_S).
WRITER_INTENT_SUFFIX = ".writer-waiting"
WRITER_INTENT_FRESH_S = 1.0


def _intent(path: Path) -> Path:
    return path.with_name(path.name + WRITER_INTENT_SUFFIX)


def _announce_writer(path: Path) -> bool:
    try:
        _intent(path).touch()
        return True
    except OSError:  # a read-only directory: no preference, plain retry
        return False


def _withdraw_writer(path: Path) -> None:
    try:
        _intent(path).unlink(missing_ok=True)
    except OSError:
        pass


def _writer_waiting(path: Path) -> bool:
    try:
        return time.time() - _intent(path).stat().st_mtime < WRITER_INTENT_FRESH_S
    except OSError:
        return False


def _defer_to_waiting_writer(path: Path, deadline: float) -> None:
    """Before a read-only open: let a waiting writer in first (never past this open's deadline)."""
    while _writer_waiting(path) and time.monotonic() < deadline:
        time.sleep(0.01)


@contextmanager
def connect(db_path: Path | str, *, read_only: bool, retry_s: float | None = None,
            settings: dict[str, str | bool | int | float | list[str]] | None = None,
            ) -> Iterator[duckdb.DuckDBPyConnection]:
    """Open `db_path` briefly; retry lock conflicts for up to `retry_s` seconds.

    `retry_s` None: `LOCK_RETRY_SECONDS`, or the wait of an enclosing
    `calib.store.read_retry.lock_wait` block.

    `settings` are extra DuckDB configuration options fixed at open time (the
    `calib sql` sandbox passes its own).

    Read-only opens of a missing file raise StoreError (nothing to read yet).
    Writers create the parent directory and the file, and apply migrations.
    """
    if retry_s is None:  # a bounded reader (calib.store.read_retry) sets a short wait per open
        from calib.store.read_retry import LOCK_WAIT_S

        wait_s = LOCK_WAIT_S.get()
        retry_s = LOCK_RETRY_SECONDS if wait_s is None else wait_s
    path = Path(db_path)
    if read_only and not path.exists():
        raise StoreError(f"history file {path} does not exist yet: run `calib auto-calibrate` or `calib demo-data` first")
    if not read_only:
        path.parent.mkdir(parents=True, exist_ok=True)
    # One DuckDB worker thread: history queries are tiny, and starting a pool of threads per
    # connection costs ~5 ms of every CLI run (a store is one short-lived connection).
    config: dict[str, str | bool | int | float | list[str]] = (
        {"threads": 1} if read_only else {"storage_compatibility_version": STORAGE_COMPATIBILITY, "threads": 1})
    config.update(settings or {})
    deadline = time.monotonic() + retry_s
    delay = 0.05
    if read_only:
        _defer_to_waiting_writer(path, deadline)
    announced = False
    try:
        while True:
            try:
                con = duckdb.connect(str(path), read_only=read_only, config=config)
                break
            except duckdb.Error as e:
                if not _is_lock_error(e):
                    raise StoreError(f"cannot open history file {path}: {e}") from e
                if time.monotonic() >= deadline:
                    raise StoreLockedError(
                        f"history file {path} is locked by another process (tried for {retry_s:.0f}s); "
                        "close the other writer or retry"
                    ) from e
                if not read_only:  # ask new readers to hold off, so a stream of reads cannot starve us
                    announced = _announce_writer(path) or announced
                    delay = min(delay, 0.05)
                time.sleep(delay)
                delay = min(delay * 2, 0.5)
    finally:
        if announced:
            _withdraw_writer(path)
    try:
        if not read_only:
            from calib.store.migrations import migrate

            migrate(con)
        yield con
    finally:
        con.close()

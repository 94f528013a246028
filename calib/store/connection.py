"""Short-lived DuckDB connections with bounded retry on lock conflicts.

DuckDB allows one read-write process or many read-only ones, never both,
and fails at once with IOException "Could not set lock on file". So every
connection here lives for one query or one write transaction, and opening
retries with backoff for a bounded time before a clear StoreError.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

import duckdb

from calib.errors import CalibError, StoreError, StoreLockedError
from calib.store.rollback import rollback_quietly

# Files stay readable by the DuckDB 1.5 CLI (`pip install duckdb-cli==1.5.6`).
STORAGE_COMPATIBILITY = "v1.5.0"
LOCK_RETRY_SECONDS = 10.0

T = TypeVar("T")


def lock_retry_s() -> float:
    """How long opens retry a lock held by another process: env CALIB_LOCK_RETRY_S, default 10 s."""
    try:
        return max(0.0, float(os.environ.get("CALIB_LOCK_RETRY_S", LOCK_RETRY_SECONDS)))
    except ValueError:
        return LOCK_RETRY_SECONDS


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

    `retry_s` None: `lock_retry_s()` (env CALIB_LOCK_RETRY_S, default 10 s), or the wait of
    an enclosing `calib.store.read_retry.lock_wait` block.

    `settings` are extra DuckDB configuration options fixed at open time (the
    `calib sql` sandbox passes its own).

    Read-only opens of a missing file raise StoreError (nothing to read yet).
    Writers create the parent directory and the file, and apply migrations.
    """
    if retry_s is None:  # a bounded reader (calib.store.read_retry) sets a short wait per open
        from calib.store.read_retry import LOCK_WAIT_S

        wait_s = LOCK_WAIT_S.get()
        retry_s = lock_retry_s() if wait_s is None else wait_s
    path = Path(db_path)
    if path.is_file() and path.stat().st_size == 0:
        raise StoreError(f"history file {path} is empty (0 bytes), not a DuckDB database: remove it, then record "
                         "a run (or build a demo history with `calib demo-db`)")
    if read_only and not path.exists():
        raise StoreError(f"history file {path} does not exist yet: run `calib demo-db` for a demo history, or record a run with `calib auto-calibrate`")
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

            try:
                migrate(con)
            except duckdb.Error as e:
                raise StoreError(f"could not bring {path} up to date: {_one_line(e)}") from e
        yield con
    finally:
        con.close()


def _one_line(e: BaseException) -> str:
    text = " ".join(str(e).split())
    if "no space left" in text.lower() or getattr(e, "errno", None) == 28:
        return f"the disk is full ({text})"
    return text


@contextmanager
def write_transaction(db_path: Path | str, what: str) -> Iterator[duckdb.DuckDBPyConnection]:
    """One write transaction on a short-lived connection: COMMIT on success, ROLLBACK otherwise.

    calib's own errors pass through unchanged; a DuckDB or OS error (a failed
    COMMIT on a full disk included) becomes one StoreError line "could not
    <what>: ...". DuckDB discards an uncommitted transaction, so the file keeps
    its last committed state.
    """
    with connect(db_path, read_only=False) as con:
        con.execute("BEGIN TRANSACTION")
        try:
            yield con
            con.execute("COMMIT")
        except CalibError:
            rollback_quietly(con)
            raise
        except (duckdb.Error, OSError) as e:
            rollback_quietly(con)
            raise StoreError(f"could not {what}: {_one_line(e)}") from e
        except BaseException:
            rollback_quietly(con)
            raise


def check_writable(db_path: Path | str, *, schema: bool = True,
                   then: Callable[[duckdb.DuckDBPyConnection], T] | None = None) -> T | None:
    """Fail fast, before any calibration runs, when a write to `db_path` is bound to fail.

    Raises StoreError when the file (or the directory that would hold a new
    one) cannot be written, when it is empty or not a DuckDB file, or when a
    newer calib wrote its schema (defect 6: never write a schema this code does
    not know). A lock held by another writer is no reason: the write retries.

    `then(con)` runs on the same read-only connection once the file passed, and
    its value is returned (None without `then`, or when there is no file yet):
    a run reads what it needs before calibrating (the applied multiplier) on the
    connection that checked the file, instead of opening it twice.

    `schema=False` checks the path only and opens nothing: for a caller whose
    write transaction follows at once (`calib apply`), since the writer's own open
    refuses an empty file, a non-DuckDB file and a newer schema (`migrate`) before
    it writes anything.
    """
    path = Path(db_path)
    if path.exists():
        if path.is_dir():
            raise StoreError(f"history file {path} is a directory; give --db a file path")
        if not os.access(path, os.R_OK | os.W_OK):
            raise StoreError(f"history file {path} is not writable (permissions): choose another --db")
    else:
        parent = next((p for p in path.parents if p.exists()), None)
        if parent is None or not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
            raise StoreError(f"cannot create history file {path}: {parent} is not a writable directory")
        return None
    if not schema:
        return None
    from calib.store.migrations import SCHEMA_VERSION, current_version, newer_schema_error

    with connect(path, read_only=True) as con:
        version = current_version(con)
        if version > SCHEMA_VERSION:
            raise StoreError(newer_schema_error(path, version))
        return None if then is None else then(con)

"""Reading the history file beside writers: the helper the app, the CLI and Python users share.

DuckDB lets one process write a file or many processes read it, never both at
once: a plain `duckdb.connect(db, read_only=True)` fails at once with
"Conflicting lock is held" (or "Could not set lock on file") while a
`calib` command writes, which it does for milliseconds to a second. These
helpers retry that one error with backoff (50 ms doubling to 0.5 s) for a
bounded time, then raise one StoreError; any other error is raised at once.
Keep the connection short: while it is open, writers wait for it.

    from calib.store.read import open_read_only, read_frame

    with open_read_only("data/calibration.duckdb") as con:
        row = con.execute("SELECT count(*) FROM calibration_runs").fetchone()
    runs = read_frame("data/calibration.duckdb", "SELECT * FROM live_calibration_history LIMIT ?", [5])
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import duckdb
import polars as pl

from calib.store.connection import connect, lock_retry_s

__all__ = ["lock_retry_s", "open_read_only", "read_frame"]


@contextmanager
def open_read_only(db_path: Path | str, *, retry_s: float | None = None,
                   settings: dict[str, str | bool | int | float | list[str]] | None = None,
                   ) -> Iterator[duckdb.DuckDBPyConnection]:
    """A read-only connection to `db_path`, retrying a writer's lock for up to `retry_s` seconds.

    `retry_s` None: env CALIB_LOCK_RETRY_S, else 10 s.
    Raises calib.errors.StoreError when the file does not exist, is not a
    DuckDB file, or is still locked after `retry_s` (0 tries exactly once).
    Never creates or migrates the file; closes the connection on exit.
    """
    with connect(db_path, read_only=True, retry_s=retry_s, settings=settings) as con:
        yield con


def read_frame(db_path: Path | str, sql: str, params: list[Any] | None = None, *,
               retry_s: float | None = None) -> pl.DataFrame:
    """Run one query on a short read-only connection (`open_read_only`) and return a polars frame."""
    with open_read_only(db_path, retry_s=retry_s) as con:
        return con.sql(sql, params=params or []).pl()

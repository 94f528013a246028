"""Bounded retry of whole reads while another process writes the history file.

DuckDB lets one read-write process or many read-only ones hold the file, and
refuses the other side at once ("Conflicting lock is held"). `connect` already
retries its own open; a reader in another process (the trader's agent, the HTTP
server) needs one bound over the whole read instead, short enough to answer
"locked" in seconds: `read_retrying` runs the read with short per-open waits
(`lock_wait`) and retries it with backoff until `retry_s` is spent.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import TypeVar

import duckdb

from calib.errors import StoreError, StoreLockedError

T = TypeVar("T")

# Per-open lock wait that `connect` uses instead of its default while a read runs here.
LOCK_WAIT_S: ContextVar[float | None] = ContextVar("calib_lock_wait_s", default=None)


@contextmanager
def lock_wait(seconds: float) -> Iterator[None]:
    """Let every `connect` inside this block wait at most `seconds` for a lock."""
    token = LOCK_WAIT_S.set(seconds)
    try:
        yield
    finally:
        LOCK_WAIT_S.reset(token)


def is_lock_conflict(e: BaseException) -> bool:
    """True when `e` (or what it wraps) is DuckDB refusing a lock another process holds."""
    seen: BaseException | None = e
    while seen is not None:
        text = str(seen).lower()
        if isinstance(seen, StoreLockedError) or "conflicting lock" in text or "could not set lock" in text \
                or "is locked by another process" in text:
            return True
        seen = seen.__cause__
    return False


def read_retrying(read: Callable[[], T], *, retry_s: float = 5.0, per_open_s: float = 0.25,
                  what: str = "history file") -> T:
    """`read()`, retried on lock conflicts for up to `retry_s` seconds, then StoreLockedError."""
    deadline = time.monotonic() + retry_s
    delay, attempts = 0.02, 0
    while True:
        attempts += 1
        try:
            with lock_wait(min(per_open_s, max(deadline - time.monotonic(), 0.0))):
                return read()
        except (StoreError, duckdb.Error) as e:
            if not is_lock_conflict(e):
                raise
            left = deadline - time.monotonic()
            if left <= 0:
                raise StoreLockedError(
                    f"{what} stayed locked by a writer for {retry_s:g} s ({attempts} attempts); retry later"
                ) from e
            time.sleep(min(delay, left))
            delay = min(delay * 2, 0.25)

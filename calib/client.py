"""Read API for other processes (the trader's options agent): what is applied, and recent runs.

Every call opens the history file read-only for one query and retries lock
conflicts with a writer (`calib auto-calibrate`, `calib calibrate-live`) for up to
`retry_s` seconds, then raises `StoreLockedError`. The answers come from the same
query functions as `calib state --json` and `calib history --json`, so the three
cannot differ:

    from calib.client import applied_multipliers
    state = applied_multipliers("BTC", db="data/calibration.duckdb")
    if state.global_multiplier is not None:
        weekly = state.bands.get("weekly", state.global_multiplier)
        print(state.run_id, state.updated_at, weekly, state.skew)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from calib._typing import UNDERLYINGS
from calib.config import history_path
from calib.errors import InvalidInputError, StoreError
from calib.queries import (
    AppliedMultipliers,
    SkewInForce,
    applied_state,
    history_records,
    json_ready,
    run_by_id,
)
from calib.store.read_retry import read_retrying

__all__ = ["DEFAULT_RETRY_S", "AppliedMultipliers", "SkewInForce", "applied_multipliers", "get_run",
           "latest_runs", "resolve_db"]

DEFAULT_RETRY_S = 5.0  # a writer holds the file for ~0.1 s per run; 5 s outlasts a burst of them
SOURCES: tuple[str, ...] = ("harvested", "live")
MAX_LIMIT = 100_000


def resolve_db(db: Path | str | None) -> Path:
    """`db`, else `$CALIB_DB`, else the default `data/calibration.duckdb` (as the CLI does)."""
    return history_path(db)


def check_underlying(underlying: str | None) -> str:
    if underlying is None:
        raise InvalidInputError(f"`underlying` is required: one of {', '.join(UNDERLYINGS)}")
    if underlying not in UNDERLYINGS:
        raise InvalidInputError(f"`underlying` must be one of {', '.join(UNDERLYINGS)}; got {underlying!r}")
    return underlying


def check_source(source: str | None) -> str | None:
    if source is not None and source not in SOURCES:
        raise InvalidInputError(f"`source` must be one of {', '.join(SOURCES)}; got {source!r}")
    return source


def check_limit(limit: int) -> int:
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_LIMIT:
        raise InvalidInputError(f"`limit` must be an integer from 1 to {MAX_LIMIT}; got {limit!r}")
    return limit


def applied_multipliers(underlying: str, *, db: Path | str | None = None,
                        retry_s: float = DEFAULT_RETRY_S) -> AppliedMultipliers:
    """The multipliers in force for `underlying`: global, per band, updated_at, run_id and skew.

    `global_multiplier` is None (and `bands` empty) when nothing was ever applied:
    the engine then uses 1.0. `to_dict()` is exactly what `calib state --json`
    prints. A history file that does not exist raises StoreError, as `calib state`
    exits 2 and `calib serve` answers 503: a wrong path must not read as "nothing applied".
    """
    und = check_underlying(underlying)
    path = resolve_db(db)
    if not path.exists():
        raise StoreError(f"history file {path} does not exist: run `calib demo-db` for a demo history, "
                         "or record a run with `calib calibrate-live` or `calib auto-calibrate`")
    return read_retrying(lambda: applied_state(path, und), retry_s=retry_s, what=f"history file {path}")


def latest_runs(underlying: str | None = None, *, source: str | None = None, limit: int = 20,
                db: Path | str | None = None, retry_s: float = DEFAULT_RETRY_S) -> list[dict[str, Any]]:
    """Newest runs first, as JSON-ready dicts: the records `calib history --json` prints."""
    und = check_underlying(underlying) if underlying is not None else None
    src, n, path = check_source(source), check_limit(limit), resolve_db(db)
    return read_retrying(lambda: history_records(path, underlying=und, source=src, limit=n),
                         retry_s=retry_s, what=f"history file {path}")


def get_run(run_id: str, *, db: Path | str | None = None,
            retry_s: float = DEFAULT_RETRY_S) -> dict[str, Any] | None:
    """One run: `{"run": its history columns, "result": its stored result JSON}`, None if unknown."""
    if not isinstance(run_id, str) or not run_id.strip():
        raise InvalidInputError(f"`run_id` must be a non-empty string; got {run_id!r}")
    path = resolve_db(db)
    detail = read_retrying(lambda: run_by_id(path, run_id), retry_s=retry_s, what=f"history file {path}")
    if detail is None:
        return None
    out: dict[str, Any] = json_ready({"run": detail.run, "result": detail.result})
    return out

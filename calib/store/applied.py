"""The one store of applied multipliers: `applied_multipliers` plus its append-only log."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import duckdb

from calib.store.catalog import has_table
from calib.store.connection import check_writable, connect


def write_clock(con: duckdb.DuckDBPyConnection, *floors: datetime | None) -> datetime:
    """The time a write transaction records, read while it holds the file.

    Never before the newest `applied_multipliers_log.changed_at` (the log never
    runs backwards, even if the wall clock steps back) nor before any of
    `floors` (a run is never applied before it was created).
    """
    row = con.execute("SELECT max(changed_at) FROM applied_multipliers_log").fetchone()
    candidates = [datetime.now(UTC), *(f for f in floors if f is not None)]
    if row and row[0] is not None:
        candidates.append(row[0])
    return max(candidates)


def write_applied(
    con: duckdb.DuckDBPyConnection,
    underlying: str,
    global_multiplier: float,
    band_multipliers: dict[str, float],
    *,
    run_id: str,
    at: datetime,
    reason: str,
) -> int:
    """Upsert global and per-band multipliers and log each change. Caller owns the transaction.

    Returns the log's `change_id` of the global change: the run's `applied_seq`.
    """
    values = {"global": float(global_multiplier), **{k: float(v) for k, v in band_multipliers.items()}}
    old = dict(
        con.execute(
            "SELECT scope, multiplier FROM applied_multipliers WHERE underlying = ?", [underlying]
        ).fetchall()
    )
    row = con.execute("SELECT coalesce(max(change_id), 0) FROM applied_multipliers_log").fetchone()
    next_id = int(row[0]) + 1 if row else 1
    global_id = next_id  # "global" is the first scope written
    for scope, mult in values.items():
        con.execute(
            "INSERT OR REPLACE INTO applied_multipliers (underlying, scope, multiplier, updated_at, run_id) "
            "VALUES (?, ?, ?, ?, ?)",
            [underlying, scope, mult, at, run_id],
        )
        con.execute(
            "INSERT INTO applied_multipliers_log VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            [next_id, at, underlying, scope, old.get(scope), mult, run_id, reason],
        )
        next_id += 1
    return global_id


def read_applied(con: duckdb.DuckDBPyConnection, underlying: str) -> dict[str, tuple[float, datetime, str | None]]:
    """scope -> (multiplier, updated_at, run_id) for one underlying: the one reader of the applied state.

    Every consumer reads here: the tested multiplier of a run (`applied_global`), the policy's
    state inside a write, `calib state` / the HTTP API (`calib.queries.applied_state`) and the
    app's table (`calib.queries.applied_multipliers`). `{}` when nothing was ever applied, also
    on a file whose schema predates the table. (`current_applied_multipliers` is a view of
    exactly these columns of this table.)
    """
    if not has_table(con, "applied_multipliers"):
        return {}
    rows = con.execute(
        "SELECT scope, multiplier, updated_at, run_id FROM applied_multipliers WHERE underlying = ?",
        [underlying],
    ).fetchall()
    return {scope: (float(m), ts, rid) for scope, m, ts, rid in rows}


def applied_global(db_path: Path | str, underlying: str, *, for_write: bool = False) -> float | None:
    """The applied global multiplier in the history file `db_path` (None: no file, nothing applied).

    `for_write`: the caller will record a run there, so first refuse (StoreError) a file the
    run could not be written to (`check_writable`), on the same read-only connection.
    """
    if for_write:
        return check_writable(db_path, then=lambda con: _global(read_applied(con, underlying)))
    if not Path(db_path).exists():
        return None
    with connect(db_path, read_only=True) as con:
        return _global(read_applied(con, underlying))


def _global(applied: dict[str, tuple[float, datetime, str | None]]) -> float | None:
    g = applied.get("global")
    return g[0] if g else None

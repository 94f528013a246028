"""The one store of applied multipliers: `applied_multipliers` plus its append-only log."""

from __future__ import annotations

from datetime import datetime

import duckdb


def write_applied(
    con: duckdb.DuckDBPyConnection,
    underlying: str,
    global_multiplier: float,
    band_multipliers: dict[str, float],
    *,
    run_id: str,
    at: datetime,
    reason: str,
) -> None:
    """Upsert global and per-band multipliers and log each change. Caller owns the transaction."""
    values = {"global": float(global_multiplier), **{k: float(v) for k, v in band_multipliers.items()}}
    old = dict(
        con.execute(
            "SELECT scope, multiplier FROM applied_multipliers WHERE underlying = ?", [underlying]
        ).fetchall()
    )
    row = con.execute("SELECT coalesce(max(change_id), 0) FROM applied_multipliers_log").fetchone()
    next_id = int(row[0]) + 1 if row else 1
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


def read_applied(con: duckdb.DuckDBPyConnection, underlying: str) -> dict[str, tuple[float, datetime, str | None]]:
    """scope -> (multiplier, updated_at, run_id) for one underlying."""
    rows = con.execute(
        "SELECT scope, multiplier, updated_at, run_id FROM applied_multipliers WHERE underlying = ?",
        [underlying],
    ).fetchall()
    return {scope: (float(m), ts, rid) for scope, m, ts, rid in rows}

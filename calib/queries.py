"""Read-only queries over the history file, for the CLI (`history`, `state`, `sql`) and the app.

Each function opens a read-only connection, runs its query and closes it,
so a writer (the CLI) is never blocked for longer than one read.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import duckdb
import polars as pl

from calib.errors import InvalidInputError, StoreError
from calib.store.connection import connect


def _frame(con: duckdb.DuckDBPyConnection, sql: str, params: list[Any] | None = None) -> pl.DataFrame:
    return con.sql(sql, params=params or []).pl()


def _has_table(con: duckdb.DuckDBPyConnection, name: str) -> bool:
    row = con.execute(
        "SELECT count(*) FROM information_schema.tables WHERE table_name = ?", [name]
    ).fetchone()
    return bool(row and row[0])


def _columns(con: duckdb.DuckDBPyConnection, table: str) -> set[str]:
    rows = con.execute(
        "SELECT column_name FROM information_schema.columns WHERE table_name = ?", [table]
    ).fetchall()
    return {r[0] for r in rows}


HISTORY_COLUMNS: tuple[str, ...] = (
    "run_id", "created_at", "source", "underlying", "status", "reason", "dte_min", "dte_max",
    "lookback_days", "multiplier_tested", "recommended_multiplier", "smoothed_multiplier",
    "vega_weighted_mae_pct", "mae_pct", "bias_pct", "n_samples", "applied", "applied_at",
    "data_quality_status", "policy_decision", "policy_reason", "replay", "at_bound", "rv_7d_pct", "atm_iv_pct",
)


def list_runs(db_path: Path, *, underlying: str | None = None, source: str | None = None,
              limit: int = 20) -> pl.DataFrame:
    """Newest runs first; columns missing in an old file come back as nulls."""
    with connect(db_path, read_only=True) as con:
        if not _has_table(con, "calibration_runs"):
            return pl.DataFrame()
        have = _columns(con, "calibration_runs")
        cols = ", ".join(c if c in have else f"NULL AS {c}" for c in HISTORY_COLUMNS)
        where, params = [], []
        if underlying:
            where.append("underlying = ?")
            params.append(underlying)
        if source:
            where.append("source = ?")
            params.append(source)
        clause = f"WHERE {' AND '.join(where)}" if where else ""
        params.append(int(limit))
        return _frame(con, f"SELECT {cols} FROM calibration_runs {clause} ORDER BY created_at DESC LIMIT ?", params)


@dataclass(frozen=True, slots=True, kw_only=True)
class AppliedState:
    """Current applied multipliers of one underlying (from `applied_multipliers` only)."""

    underlying: str
    global_multiplier: float | None
    bands: dict[str, float] = field(default_factory=dict)
    updated_at: datetime | None = None
    run_id: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "underlying": self.underlying,
            "global_multiplier": self.global_multiplier,
            "bands": dict(self.bands),
            "updated_at": self.updated_at.isoformat() if self.updated_at else None,
            "run_id": self.run_id,
        }


def applied_state(db_path: Path, underlying: str) -> AppliedState:
    """Read the view `current_applied_multipliers` for one underlying."""
    if not Path(db_path).exists():
        return AppliedState(underlying=underlying, global_multiplier=None)
    with connect(db_path, read_only=True) as con:
        if not _has_table(con, "current_applied_multipliers"):
            return AppliedState(underlying=underlying, global_multiplier=None)
        rows = con.execute(
            "SELECT scope, multiplier, updated_at, run_id FROM current_applied_multipliers WHERE underlying = ?",
            [underlying],
        ).fetchall()
    g = next((r for r in rows if r[0] == "global"), None)
    newest = max(rows, key=lambda r: r[2]) if rows else None
    return AppliedState(
        underlying=underlying,
        global_multiplier=float(g[1]) if g else None,
        bands={r[0]: float(r[1]) for r in rows if r[0] != "global"},
        updated_at=newest[2] if newest else None,
        run_id=(g or newest)[3] if (g or newest) else None,
    )


def run_result(db_path: Path, run_id: str) -> dict[str, Any] | None:
    """The stored result JSON of one run."""
    with connect(db_path, read_only=True) as con:
        row = con.execute("SELECT result FROM calibration_runs WHERE run_id = ?", [run_id]).fetchone()
    return json.loads(row[0]) if row and row[0] else None


_WRITE_WORDS = ("insert", "update", "delete", "create", "drop", "alter", "attach", "copy", "install", "load",
                "pragma", "set ", "checkpoint", "vacuum", "export", "import")


def run_sql(db_path: Path, sql: str) -> pl.DataFrame:
    """Run one read-only statement (the connection is read-only too) and return its rows."""
    text = sql.strip().rstrip(";")
    if not text:
        raise InvalidInputError("empty SQL statement")
    if ";" in text:
        raise InvalidInputError("one statement at a time, please")
    if text.lower().startswith(_WRITE_WORDS):
        raise InvalidInputError("`calib sql` is read-only: use SELECT / WITH / DESCRIBE / SHOW")
    try:
        with connect(db_path, read_only=True) as con:
            return _frame(con, text)
    except duckdb.Error as e:
        raise StoreError(f"query failed: {e}") from e

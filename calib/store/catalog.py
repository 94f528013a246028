"""What a history file holds: the one table-existence check every reader and writer uses."""

from __future__ import annotations

import duckdb


def has_table(con: duckdb.DuckDBPyConnection, name: str) -> bool:
    """Whether table or view `name` exists in the open file (files predating a migration lack some)."""
    row = con.execute(
        "SELECT count(*) FROM information_schema.tables WHERE table_name = ?", [name]
    ).fetchone()
    return bool(row and row[0])


def table_names(con: duckdb.DuckDBPyConnection) -> set[str]:
    """Every table and view in the open file (one query for callers that test several)."""
    # fetchall (not fetchone): duckdb 2.0 refuses `con.sql` while an execute() result is unfinished
    return {r[0] for r in con.execute("SELECT table_name FROM information_schema.tables").fetchall()}

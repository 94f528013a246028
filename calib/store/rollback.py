"""ROLLBACK that never hides the real error: shared by the write transaction and the migrations."""

from __future__ import annotations

from contextlib import suppress

import duckdb


def rollback_quietly(con: duckdb.DuckDBPyConnection) -> None:
    """ROLLBACK when a transaction is still open.

    A failed COMMIT (a full disk) has already ended the transaction, so a plain
    ROLLBACK would raise "no transaction is active" over the real error.
    """
    with suppress(duckdb.Error):
        con.execute("ROLLBACK")

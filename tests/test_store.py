"""History store: migrations in place, one-transaction writes, lock handling, CLI compatibility."""

from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap
import time
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import pytest

from calib.errors import InvalidInputError, StoreError
from calib.queries import applied_state, list_runs, run_sql
from calib.store.connection import STORAGE_COMPATIBILITY, connect
from calib.store.migrations import SCHEMA_VERSION, current_version, migrate


def _v1_file(path: Path) -> None:
    con = duckdb.connect(str(path), config={"storage_compatibility_version": STORAGE_COMPATIBILITY})
    migrate(con, upto=1)
    con.execute(
        "INSERT INTO calibration_runs (run_id, created_at, source, underlying, status, reason, applied, "
        "recommended_multiplier, vega_weighted_mae_pct) VALUES ('old-1', ?, 'harvested', 'BTC', 'ok', "
        "'Calibration within thresholds', false, 1.1, 5.0)",
        [datetime(2025, 1, 1, tzinfo=UTC)],
    )
    con.close()


def test_migrates_old_file_in_place_keeping_rows(db_path: Path) -> None:
    _v1_file(db_path)
    with connect(db_path, read_only=False) as con:
        assert current_version(con) == SCHEMA_VERSION
        row = con.execute(
            "SELECT run_id, recommended_multiplier, n_snapshots, policy_decision FROM calibration_runs"
        ).fetchone()
        names = {r[0] for r in con.execute("SELECT name FROM schema_migrations").fetchall()}
    assert row == ("old-1", 1.1, None, None)
    assert {"initial_runs_and_applied_state", "run_detail_policy_log_and_views", "backtests"} <= names
    runs = list_runs(db_path)
    assert runs["run_id"].to_list() == ["old-1"]
    assert runs["smoothed_multiplier"].to_list() == [None]
    assert run_sql(db_path, "SELECT count(*) AS n FROM auto_calibration_history")["n"].to_list() == [1]


def test_old_reader_columns_missing_show_null(db_path: Path) -> None:
    _v1_file(db_path)  # not migrated: a read-only reader must still work
    runs = list_runs(db_path)
    assert runs["run_id"].to_list() == ["old-1"]
    assert runs["policy_decision"].to_list() == [None]


def test_read_only_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="does not exist yet"), connect(tmp_path / "nope.duckdb", read_only=True):
        pass


def test_sql_is_read_only(db_path: Path) -> None:
    with connect(db_path, read_only=False):
        pass
    with pytest.raises(Exception, match="read-only"):
        run_sql(db_path, "DELETE FROM calibration_runs")
    with pytest.raises(InvalidInputError, match="query failed"):
        run_sql(db_path, "SELECT * FROM no_such_table")


def test_locked_file_gives_store_error_then_recovers(db_path: Path) -> None:
    with connect(db_path, read_only=False):
        pass
    holder = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(f"""
            import duckdb, time, sys
            con = duckdb.connect({str(db_path)!r})
            print("locked", flush=True)
            time.sleep(1.5)
            con.close()
        """)],
        stdout=subprocess.PIPE, text=True,
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "locked"
        t0 = time.monotonic()
        with pytest.raises(StoreError, match="locked by another process"), connect(db_path, read_only=False, retry_s=0.2):
            pass
        assert time.monotonic() - t0 < 5
        # With a longer retry budget the writer gets in once the holder lets go.
        with connect(db_path, read_only=False, retry_s=10) as con:
            assert con.execute("SELECT 1").fetchone() == (1,)
    finally:
        holder.wait(timeout=10)
        if holder.stdout is not None:
            holder.stdout.close()


def test_applied_state_empty(db_path: Path) -> None:
    st = applied_state(db_path, "BTC")
    assert st.global_multiplier is None
    assert st.to_dict()["bands"] == {}


@pytest.mark.skipif(shutil.which("duckdb") is None, reason="DuckDB CLI not installed (pip install duckdb-cli==1.5.6)")
def test_file_readable_by_duckdb_15_cli(db_path: Path) -> None:
    _v1_file(db_path)
    with connect(db_path, read_only=False):
        pass
    out = subprocess.run(["duckdb", "-readonly", str(db_path), "-csv", "-c",
                          "SELECT run_id FROM auto_calibration_history"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "old-1" in out.stdout

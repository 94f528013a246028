"""`calib sql` is read-only for real: one SELECT, on a sandboxed read-only connection.

Each bypass of the old keyword check (issue 13, defect 3) is tried through the
CLI with the working directory in a temp dir, so a file it managed to write
would be found there.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from typer.testing import CliRunner

from calib.errors import InvalidInputError
from calib.queries import run_sql
from calib.store.connection import connect
from cli import app

runner = CliRunner()
SECRET = "calib-sandbox-secret-7f3a"


@pytest.fixture
def db(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A migrated history file with one run and one applied multiplier; cwd = tmp_path."""
    path = tmp_path / "h.duckdb"
    with connect(path, read_only=False) as con:
        con.execute(
            "INSERT INTO calibration_runs (run_id, created_at, source, underlying, status, reason, applied) "
            "VALUES ('r1', ?, 'harvested', 'BTC', 'ok', 'Calibration within thresholds', false)",
            [datetime(2026, 1, 1, tzinfo=UTC)],
        )
        con.execute("INSERT INTO applied_multipliers (underlying, scope, multiplier, updated_at, run_id) "
                    "VALUES ('BTC', 'global', 1.1, ?, 'r1')", [datetime(2026, 1, 1, tzinfo=UTC)])
    (tmp_path / "secret.txt").write_text(SECRET)
    monkeypatch.chdir(tmp_path)
    return path


BYPASSES: list[tuple[str, str]] = [
    ("/**/COPY (select 'x') TO 'x.csv'", "COPY"),
    ("/**/EXPORT DATABASE 'dump'", "EXPORT"),
    ("/**/ATTACH 'other.duckdb' AS other", "ATTACH"),
    ("/**/LOAD json", "LOAD"),
    ("/**/SET threads = 4", "SET"),
    ("/**/INSTALL httpfs", "LOAD"),  # duckdb reports INSTALL as a LOAD statement
    ("PRAGMA database_list", "PRAGMA"),
    ("/* x */ pragma show_tables", "PRAGMA"),
    ("CALL pragma_version()", "CALL"),
    ("EXPLAIN SELECT 1", "EXPLAIN"),
    ("DROP TABLE calibration_runs", "DROP"),
    ("-- note\nDELETE FROM calibration_runs", "DELETE"),
    ("CHECKPOINT", "CALL"),  # duckdb parses CHECKPOINT as a CALL of its function
]
SANDBOXED: list[str] = [
    "SELECT * FROM read_text('/etc/shadow')",
    "SELECT content FROM read_text('secret.txt')",
    "SELECT * FROM glob('/*')",
    "SELECT * FROM read_csv('secret.txt')",
    "FROM 'secret.txt'",
    "SELECT * FROM query('SELECT content FROM read_text(''secret.txt'')')",
    "SELECT * FROM duckdb_extensions()",
]
MULTIPLE: list[str] = [
    "SELECT 1; SELECT 2",
    "SELECT 1; /**/COPY (select 'x') TO 'x.csv'",
    "SELECT 1;;DROP TABLE calibration_runs",
]


def _untouched(db: Path) -> None:
    here = db.parent
    assert sorted(p.name for p in here.iterdir()) == ["h.duckdb", "secret.txt"]
    assert run_sql(db, "SELECT count(*) AS n FROM calibration_runs")["n"].to_list() == [1]


@pytest.mark.parametrize(("sql", "kind"), BYPASSES)
def test_non_select_statements_are_refused(db: Path, sql: str, kind: str) -> None:
    res = runner.invoke(app, ["sql", "--db", str(db), "--", sql])
    assert res.exit_code == 2, res.output
    assert res.output.startswith("Error: `calib sql` is read-only: one SELECT statement")
    assert f"got {kind}" in res.output
    assert "Traceback" not in res.output
    _untouched(db)


@pytest.mark.parametrize("sql", SANDBOXED)
def test_file_and_extension_access_is_disabled(db: Path, sql: str) -> None:
    res = runner.invoke(app, ["sql", "--db", str(db), "--json", "--", sql])
    assert res.exit_code == 2, res.output
    assert "Error: " in res.output and "Traceback" not in res.output
    assert SECRET not in res.output and "root:" not in res.output
    _untouched(db)


@pytest.mark.parametrize("sql", MULTIPLE)
def test_multiple_statements_are_refused(db: Path, sql: str) -> None:
    res = runner.invoke(app, ["sql", "--db", str(db), "--", sql])
    assert res.exit_code == 2, res.output
    assert "exactly one statement" in res.output
    _untouched(db)


def test_the_connection_is_sandboxed(db: Path) -> None:
    row = run_sql(db, "SELECT current_setting('enable_external_access') AS ext, "
                      "current_setting('autoload_known_extensions') AS autoload, "
                      "current_setting('autoinstall_known_extensions') AS autoinstall, "
                      "current_setting('lock_configuration') AS locked").row(0, named=True)
    assert row == {"ext": False, "autoload": False, "autoinstall": False, "locked": True}


def test_selects_on_tables_and_views_keep_working(db: Path) -> None:
    for sql in ("SELECT run_id, status FROM calibration_runs",
                "/* newest first */ SELECT run_id, status FROM auto_calibration_history;",
                "WITH r AS (SELECT * FROM calibration_runs) SELECT run_id, status FROM r",
                "FROM calibration_runs SELECT run_id, status"):
        assert run_sql(db, sql).rows() == [("r1", "ok")], sql
    assert run_sql(db, "SELECT multiplier FROM current_applied_multipliers")["multiplier"].to_list() == [1.1]
    assert "calibration_runs" in run_sql(db, "SHOW TABLES")["name"].to_list()
    assert "run_id" in run_sql(db, "DESCRIBE calibration_runs")["column_name"].to_list()
    res = runner.invoke(app, ["sql", "SELECT run_id FROM calibration_runs", "--db", str(db), "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout) == [{"run_id": "r1"}]


def test_empty_and_unparsable_sql_are_usage_errors(db: Path) -> None:
    with pytest.raises(InvalidInputError, match="empty SQL"):
        run_sql(db, "  ;  ")
    with pytest.raises(InvalidInputError, match="cannot parse"):
        run_sql(db, "SELEC 1")


@pytest.mark.parametrize("sql", [
    "SELECT 'infinity'::TIMESTAMP AS t",
    "SELECT '-infinity'::TIMESTAMPTZ AS t",
    "SELECT 'infinity'::DATE AS d",
    "SELECT [{'t': 'infinity'::TIMESTAMP}] AS nested",
    "SELECT union_value(a := 1) AS u",
    "SELECT INTERVAL 1 DAY AS i",
])
@pytest.mark.parametrize("json_out", [False, True])
def test_results_polars_cannot_show_are_one_clear_line(db: Path, sql: str, json_out: bool) -> None:
    res = runner.invoke(app, ["sql", "--db", str(db), *(["--json"] if json_out else []), "--", sql])
    assert res.exit_code == 2, res.output
    assert res.stderr.startswith("Error: ") and res.stderr.count("\n") == 1
    assert "VARCHAR" in res.stderr
    # with --json the error is also JSON on stdout (issue 13, defect 10); without, stdout stays empty
    assert res.stdout == ("" if not json_out else
                          json.dumps({"error": res.stderr.strip().removeprefix("Error: "), "exit_code": 2}) + "\n")
    assert res.exception is None or isinstance(res.exception, SystemExit)


def test_ordinary_dates_still_show(db: Path) -> None:
    df = run_sql(db, "SELECT created_at, created_at::DATE AS d, [created_at] AS l FROM calibration_runs")
    assert df["created_at"].to_list() == [datetime(2026, 1, 1, tzinfo=UTC)]

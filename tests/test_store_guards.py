"""Issue 13, defects 6, 9 and 10: a newer schema, readers beside a writer, and the small CLI items."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import duckdb
import pytest
from typer.testing import CliRunner

from calib.errors import StoreError
from calib.live import force_apply_latest
from calib.store.migrations import SCHEMA_VERSION
from calib.store.read import open_read_only, read_frame
from cli import app
from tests.synth import END, exact_market

ROOT = Path(__file__).resolve().parents[1]
runner = CliRunner()


@pytest.fixture(scope="module")
def market(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("guards") / "m120"
    exact_market(root, m_by_dte=((0, 1000, 1.2),), days=9)
    return root


def _live(market: Path, db: Path, *extra: str) -> list[str]:
    return ["calibrate-live", "-u", "BTC", "--replay", str(market), "--db", str(db), "--dte-min", "0", *extra]


def _auto(market: Path, db: Path, *extra: str) -> list[str]:
    return ["auto-calibrate", "-u", "BTC", "--data-dir", str(market), "--db", str(db), "--dte-min", "0",
            "--lookback-days", "2", "--as-of", END.isoformat(), *extra]


def _counts(db: Path) -> tuple[int, int]:
    with open_read_only(db) as con:
        row = con.execute("SELECT (SELECT count(*) FROM calibration_runs), "
                          "(SELECT count(*) FROM applied_multipliers_log)").fetchone()
    assert row is not None
    return int(row[0]), int(row[1])


# --------------------------------------------------------------------------- defect 6: newer schema


def test_a_file_from_a_newer_calib_is_read_but_never_written(market: Path, db_path: Path) -> None:
    assert runner.invoke(app, _live(market, db_path)).exit_code == 0
    assert runner.invoke(app, _live(market, db_path)).exit_code == 0  # skipped (cooldown): Force-Apply has work
    future = SCHEMA_VERSION + 1
    con = duckdb.connect(str(db_path))
    con.execute("INSERT INTO schema_migrations VALUES (?, 'from_the_future', now())", [future])
    con.close()
    before = _counts(db_path)
    for args in (_live(market, db_path), _auto(market, db_path),
                 ["apply", "--force", "-u", "BTC", "--db", str(db_path)]):
        res = runner.invoke(app, args)
        assert res.exit_code == 1, (args[0], res.output)
        (line,) = res.stderr.splitlines()  # one line, and no "... calibrating" first: refused before any work
        assert f"schema v{future}, newer than this calib knows (v{SCHEMA_VERSION})" in line
        assert f"calib that knows schema v{future} or later" in line
        assert _counts(db_path) == before
    with pytest.raises(StoreError, match="newer than this calib"):
        force_apply_latest(db_path, "BTC")  # the Python API (and the app's button) refuse too
    assert _counts(db_path) == before
    for args in (["history", "--db", str(db_path), "--json"], ["state", "-u", "BTC", "--db", str(db_path), "--json"],
                 ["sql", "SELECT count(*) AS n FROM calibration_runs", "--db", str(db_path), "--json"]):
        res = runner.invoke(app, args)
        assert res.exit_code == 0, (args[0], res.output)  # reading stays allowed
    assert json.loads(runner.invoke(app, ["sql", "SELECT count(*) AS n FROM calibration_runs", "--db",
                                          str(db_path), "--json"]).stdout) == [{"n": 2}]


# --------------------------------------------------------------------------- defect 9: readers beside a writer

WRITER = textwrap.dedent('''
    # Back-to-back write transactions, each holding the file ~40 ms (as CLI runs do), until `stop` exists.
    # (a writer's own open retries the readers' locks, as every calib writer does)
    import sys, time
    from calib.store.connection import connect
    from pathlib import Path
    db, stop = sys.argv[1], Path(sys.argv[2])
    with connect(db, read_only=False) as con:
        con.execute("CREATE TABLE IF NOT EXISTS scratch (i BIGINT)")
    print("ready", flush=True)
    end, n = time.monotonic() + 120, 0  # a cap, should the test die
    while not stop.exists() and time.monotonic() < end:
        with connect(db, read_only=False) as con:
            con.execute("BEGIN TRANSACTION")
            con.execute("INSERT INTO scratch VALUES (?)", [n])
            time.sleep(0.04)
            con.execute("COMMIT")
        n += 1
        time.sleep(0.04)  # busy half the time: far more than calib runs are
    print(n, flush=True)
''')


def test_read_helper_succeeds_beside_a_writer_where_plain_connect_fails(market: Path, db_path: Path,
                                                                        capsys: pytest.CaptureFixture[str]) -> None:
    assert runner.invoke(app, _live(market, db_path)).exit_code == 0
    stop = db_path.parent / "stop"
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(db_path), str(stop)], stdout=subprocess.PIPE,
                              text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    plain_failures, helper_reads, helper_s = 0, 0, []
    try:
        assert writer.stdout is not None and writer.stdout.readline().strip() == "ready"
        for _ in range(30):  # the snippet notes/DUCKDB_SCHEMA.md used to give
            try:
                duckdb.connect(str(db_path), read_only=True).close()
            except duckdb.IOException as e:
                assert "lock" in str(e).lower()
                plain_failures += 1
            time.sleep(0.01)
        for _ in range(30):
            t0 = time.monotonic()
            with open_read_only(db_path, retry_s=10.0) as con:
                row = con.execute("SELECT count(*) FROM calibration_runs").fetchone()
            assert row == (1,)
            helper_s.append(time.monotonic() - t0)
            helper_reads += 1
        frame = read_frame(db_path, "SELECT run_id FROM calibration_runs WHERE source = ?", ["live"])
        assert frame.height == 1
    finally:
        stop.touch()
        out, _ = writer.communicate(timeout=60)
    assert writer.returncode == 0
    assert int(out.strip().splitlines()[-1]) > 0  # the writer wrote beside the readers
    with capsys.disabled():
        print(f"\n[readers beside a writer] plain connect failed {plain_failures}/30; helper 30/30 ok, "
              f"slowest {max(helper_s):.3f} s")
    assert plain_failures > 0  # the contention is real ...
    assert helper_reads == 30  # ... and the helper rode it out, every time
    assert max(helper_s) < 10.0


def test_read_helper_gives_up_after_its_bound(market: Path, db_path: Path) -> None:
    assert runner.invoke(app, _live(market, db_path)).exit_code == 0
    holder = subprocess.Popen([sys.executable, "-c", "import duckdb, sys, time; c = duckdb.connect(sys.argv[1]); "
                               "print('locked', flush=True); time.sleep(20)", str(db_path)],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        t0 = time.monotonic()
        with pytest.raises(StoreError, match="locked by another process"), open_read_only(db_path, retry_s=0.6):
            pass
        assert 0.5 < time.monotonic() - t0 < 3.0
    finally:
        holder.kill()
        holder.communicate()


# --------------------------------------------------------------------------- defect 10: the small items


@pytest.mark.parametrize("args", [["apply", "--force", "-u", "BTC"], ["history"], ["sql", "SELECT 1"],
                                  ["state", "-u", "BTC"]])
def test_missing_history_file_one_convention(args: list[str], tmp_path: Path) -> None:
    db = tmp_path / "nope.duckdb"
    res = runner.invoke(app, [*args, "--db", str(db)])
    assert res.exit_code == 2, res.output
    (line,) = res.stderr.splitlines()
    assert line.startswith(f"Error: history file {db} does not exist") and "`calib demo-db`" in line
    assert "demo-data" not in line
    assert not db.exists()
    js = runner.invoke(app, [*args, "--db", str(db), "--json"])
    assert js.exit_code == 2
    assert json.loads(js.stdout) == {"error": line.removeprefix("Error: "), "exit_code": 2}
    assert len(js.stderr.splitlines()) == 1


def test_json_errors_on_stdout_name_the_flags(market: Path, db_path: Path) -> None:
    res = runner.invoke(app, [*_auto(market, db_path, "--json"), "--dte-min", "-1"])
    assert res.exit_code == 2
    err = json.loads(res.stdout)
    assert err == {"error": "`--dte-min` must be >= 0; got -1.0", "exit_code": 2}
    assert res.stderr.splitlines() == [f"Error: {err['error']}"]
    res = runner.invoke(app, [*_live(market, db_path, "--dte-max", "0.5"), "--dte-min", "2"])
    assert res.exit_code == 2 and "`--dte-min` (2.0) must not exceed `--dte-max` (0.5)" in res.stderr
    assert "min_dte" not in res.output


def test_unwritable_db_is_found_before_calibrating(market: Path, tmp_path: Path) -> None:
    blocker = tmp_path / "a_file"
    blocker.write_text("not a directory")
    for db in (blocker / "history.duckdb", tmp_path):  # under a file; a directory
        for args in (_auto(market, db), _live(market, db)):
            t0 = time.monotonic()
            res = runner.invoke(app, args)
            assert res.exit_code == 1, res.output
            (line,) = res.stderr.splitlines()  # no "... scanning" / "... calibrating" progress first
            assert line.startswith("Error: ") and str(db) in line
            assert time.monotonic() - t0 < 2.0


def test_zero_byte_history_file(market: Path, tmp_path: Path) -> None:
    db = tmp_path / "history.duckdb"
    db.touch()
    for args in (["history", "--db", str(db)], ["state", "-u", "BTC", "--db", str(db)], _live(market, db)):
        res = runner.invoke(app, args)
        assert res.exit_code == 1, res.output
        (line,) = res.stderr.splitlines()
        assert "is empty (0 bytes), not a DuckDB database" in line
        assert "lock" not in line and "writer" not in line
    assert db.stat().st_size == 0

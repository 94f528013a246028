"""CLI end to end on generated Parquet: graded runs recorded in DuckDB, exit codes, errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest
from typer.testing import CliRunner

from calib.data.layout import atomic_write_parquet
from calib.queries import list_runs
from cli import app
from tests.synth import END, exact_market

runner = CliRunner()
AS_OF = END.isoformat().replace("+00:00", "Z")


def _auto(root: Path, db: Path, *extra: str):  # type: ignore[no-untyped-def]
    return runner.invoke(app, ["auto-calibrate", "--underlying", "BTC", "--data-dir", str(root), "--db", str(db),
                               "--as-of", AS_OF, "--lookback-days", "2", "--dte-min", "0", *extra])


def test_ok_run_summary_and_record(exact_harvest: Path, db_path: Path) -> None:
    res = _auto(exact_harvest, db_path)
    assert res.exit_code == 0, res.output
    assert "Status: OK - Calibration within thresholds" in res.stdout
    assert "recommended 1.2000" in res.stdout
    for band in ("weekly", "monthly", "quarterly"):
        assert band in res.stdout
    runs = list_runs(db_path)
    assert runs["status"].to_list() == ["ok"]
    assert runs["applied"].to_list() == [False]
    assert runs["recommended_multiplier"][0] == pytest.approx(1.2, abs=1e-6)


def test_failed_run_exit_3_warning_and_recorded(tmp_path: Path, db_path: Path) -> None:
    root = tmp_path / "h"
    exact_market(root, m_by_dte=((0, 1000, 5.0),))
    res = _auto(root, db_path)
    assert res.exit_code == 3, res.output
    assert "WARNING: HARVESTED CALIBRATION FAILED" in res.stdout
    assert "Unrealistic auto-calibration" in res.stdout
    runs = list_runs(db_path)
    assert runs["status"].to_list() == ["failed"]
    assert "pinned at a search bound" in runs["reason"][0]
    assert runs["applied"].to_list() == [False]


def test_json_is_one_document(exact_harvest: Path, db_path: Path) -> None:
    res = _auto(exact_harvest, db_path, "--json")
    assert res.exit_code == 0, res.output
    d = json.loads(res.stdout)
    assert d["status"] == "ok"
    assert d["global_metrics"]["recommended_iv_multiplier"] == pytest.approx(1.2, abs=1e-6)
    assert d["data_quality"]["rows_used"] == d["n_samples"]


def test_json_failed_keeps_stdout_clean(tmp_path: Path, db_path: Path) -> None:
    root = tmp_path / "h"
    exact_market(root, m_by_dte=((0, 1000, 5.0),))
    res = _auto(root, db_path, "--json")
    assert res.exit_code == 3
    assert json.loads(res.stdout)["status"] == "failed"
    assert "WARNING" in res.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--underlying", "DOGE"], "DOGE"),
        (["--underlying", "BTC", "--dte-min", "10", "--dte-max", "3"], "`--dte-min` (10.0) must not exceed `--dte-max`"),
        (["--underlying", "BTC", "--dte-min", "-1"], "`--dte-min` must be >= 0"),
        (["--underlying", "BTC", "--lookback-days", "0"], "`--lookback-days` must be positive"),
        (["--underlying", "BTC", "--data-dir", "/nonexistent/dir"], "does not exist"),
        (["--underlying", "BTC", "--as-of", "yesterday-ish"], "ISO-8601"),
        (["--underlying", "BTC", "--option-types", "X"], "`--option-types`"),
    ],
)
def test_usage_errors_one_line_exit_2(args: list[str], message: str, exact_harvest: Path, db_path: Path) -> None:
    extra = [] if "--data-dir" in args else ["--data-dir", str(exact_harvest)]
    res = runner.invoke(app, ["auto-calibrate", *args, *extra, "--db", str(db_path)])
    assert res.exit_code == 2, res.output
    assert message in res.output
    assert "Traceback" not in res.output


def test_history_sql_and_help(exact_harvest: Path, db_path: Path) -> None:
    assert _auto(exact_harvest, db_path).exit_code == 0
    res = runner.invoke(app, ["history", "--db", str(db_path)])
    assert res.exit_code == 0, res.output
    assert "harvested" in res.stdout
    res = runner.invoke(app, ["sql", "SELECT status, count(*) AS n FROM auto_calibration_history GROUP BY 1",
                              "--db", str(db_path), "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout) == [{"status": "ok", "n": 1}]
    res = runner.invoke(app, ["sql", "DROP TABLE calibration_runs", "--db", str(db_path)])
    assert res.exit_code == 2
    assert "read-only" in res.output


def test_every_command_has_help() -> None:
    import typer.main

    group = typer.main.get_command(app)
    for name, cmd in group.commands.items():  # type: ignore[attr-defined]
        assert cmd.help, f"command {name} has no help"
        for p in cmd.params:
            if p.name not in ("help",):
                assert getattr(p, "help", None), f"{name} --{p.name} has no help"


def test_python_cli_py_works(exact_harvest: Path, db_path: Path) -> None:
    out = subprocess.run([sys.executable, "cli.py", "auto-calibrate", "--underlying", "BTC", "--data-dir",
                          str(exact_harvest), "--db", str(db_path), "--as-of", AS_OF, "--lookback-days", "2",
                          "--json"], capture_output=True, text=True, timeout=120,
                         cwd=Path(__file__).resolve().parents[1])
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["underlying"] == "BTC"


@pytest.mark.parametrize("fast_exit", ["", "1"])
def test_exit_keeps_exit_codes_and_flushes_output(tmp_path: Path, db_path: Path, fast_exit: str) -> None:
    """Normal exit and the opt-in os._exit (CALIB_FAST_EXIT=1): every status and byte of output survives."""
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "CALIB_FAST_EXIT": fast_exit}

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "cli.py", *args], capture_output=True, text=True, timeout=120, cwd=root,
                              env=env)

    usage = run("auto-calibrate", "--underlying", "BTC", "--data-dir", str(tmp_path / "missing"), "--db", str(db_path))
    assert usage.returncode == 2 and "does not exist" in usage.stderr
    assert run("--help").returncode == 0
    exact_market(tmp_path / "h", m_by_dte=((0, 1000, 5.0),))  # multiplier pinned at a bound: a failed run
    failed = run("auto-calibrate", "--underlying", "BTC", "--data-dir", str(tmp_path / "h"), "--db", str(db_path),
                 "--as-of", AS_OF, "--lookback-days", "2", "--json")
    assert failed.returncode == 3, failed.stderr
    assert json.loads(failed.stdout)["status"] == "failed"  # the whole document made it out
    history = run("history", "--db", str(db_path), "--json")
    assert history.returncode == 0 and len(json.loads(history.stdout)) == 1


@pytest.mark.parametrize(("code", "want"), [(None, 0), (0, 0), (3, 3), ("boom", 1)])
def test_exit_code_matches_sys_exit(code: object, want: int, capsys: pytest.CaptureFixture[str]) -> None:
    from cli import _exit_code

    assert _exit_code(code) == want
    assert ("boom" in capsys.readouterr().err) == (code == "boom")


# --- issue 12: the text output says what the numbers mean ---------------------------------------

def test_text_output_explains_current_skew_and_shows_data_time(exact_harvest: Path, db_path: Path) -> None:
    res = _auto(exact_harvest, db_path)
    assert res.exit_code == 0, res.output
    line = next(ln for ln in res.stdout.splitlines() if ln.startswith("Multiplier"))
    # Flat truth, the default skew is not; 1.1124 is the exact minimum of the current-skew objective
    # (the closed form's fixed point was 1.1101: issue 12 defect 2).
    assert "recommended 1.2000" in line and "current-skew 1.1124" in line
    assert "the value the live policy smooths and applies" in res.stdout
    assert "Newest snap 2026-03-01 00:00Z  (age " in res.stdout


def test_live_text_shows_chain_time_and_stale_reason(exact_harvest: Path, db_path: Path) -> None:
    res = runner.invoke(app, ["calibrate-live", "--underlying", "BTC", "--replay", str(exact_harvest),
                              "--dte-min", "0", "--db", str(db_path)])
    assert res.exit_code == 0, res.output
    assert "Chain time  2026-03-01 00:00Z  (age " in res.stdout
    assert "[warning] stale_chain: chain time 2026-03-01 00:00Z is" in res.stdout
    assert "Status: DEGRADED - Data quality degraded (stale_chain); use with caution" in res.stdout


def test_failed_data_quality_shows_dashes_and_the_dropped_file(exact_harvest: Path, db_path: Path) -> None:
    _usd = sorted((exact_harvest / "BTC").rglob("*.parquet"))
    for f in _usd:
        df = pl.read_parquet(f)
        atomic_write_parquet(df.with_columns(pl.col("mark_price") * pl.col("underlying_price")), f)
    res = _auto(exact_harvest, db_path)
    assert res.exit_code == 3
    line = next(ln for ln in res.stdout.splitlines() if ln.startswith("Multiplier"))
    assert "recommended -" in line and "current-skew -" in line
    at_rec = next(ln for ln in res.stdout.splitlines() if ln.startswith("at recommended"))
    assert at_rec.split()[2:] == ["-", "-", "-", "-"]
    assert list_runs(db_path)["recommended_multiplier"].to_list() == [None]


def test_partially_dropped_file_is_visible_in_text(exact_harvest: Path, db_path: Path) -> None:
    f = sorted((exact_harvest / "BTC").rglob("*.parquet"))[-2]
    atomic_write_parquet(pl.read_parquet(f).drop("mark_price"), f)
    res = _auto(exact_harvest, db_path)
    assert "[warning] schema_drift: column(s) present in some files only: mark_price" in res.stdout
    assert "rows excluded (missing_value)" in res.stdout
    assert "Status: DEGRADED" in res.stdout or "Status: FAILED" in res.stdout


_PROBE = """
import atexit, os, sys
atexit.register(lambda: print("atexit ran", flush=True))
sys.argv = ["calib", "--help"]
{how}
"""


@pytest.mark.parametrize(("how", "fast_exit", "atexit_runs"), [
    ("import cli; cli.main()", "", True),
    ("import cli; cli.main()", "1", False),
    ("from calib.entry import main; main()", "", True),
])
def test_main_exits_normally_unless_fast_exit_is_asked_for(how: str, fast_exit: str, atexit_runs: bool) -> None:
    env = {k: v for k, v in os.environ.items() if k != "CALIB_FAST_EXIT"}
    if fast_exit:
        env["CALIB_FAST_EXIT"] = fast_exit
    out = subprocess.run([sys.executable, "-c", _PROBE.format(how=how)], capture_output=True, text=True,
                         timeout=60, env=env, cwd=Path(__file__).resolve().parents[1])
    assert out.returncode == 0, out.stderr
    assert "Usage" in out.stdout
    assert ("atexit ran" in out.stdout) == atexit_runs


def test_process_tuning_only_in_the_console_entry_point() -> None:
    """Importing `cli` (pytest, a notebook) leaves the process alone; `calib.entry` tunes it before numpy."""
    probe = ("import os, sys; sys.argv = ['calib', '--help']\n"
             "{how}\n"
             "print('TUNED' if os.environ.get('OPENBLAS_NUM_THREADS') == '1' else 'UNTUNED', file=sys.stderr)")
    env = {k: v for k, v in os.environ.items() if k not in ("OPENBLAS_NUM_THREADS", "NUMPY_MADVISE_HUGEPAGE")}
    root = Path(__file__).resolve().parents[1]

    def run(how: str) -> str:
        code = probe.format(how=how)
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=env,
                             cwd=root)
        return out.stderr

    assert "UNTUNED" in run("import cli")
    assert "TUNED" in run("from calib.entry import main\ntry:\n    main()\nexcept SystemExit:\n    pass").split()
    assert "numpy" not in subprocess.run(
        [sys.executable, "-c", "import sys, calib.entry; print(sorted(sys.modules))"],
        capture_output=True, text=True, timeout=60, env=env, cwd=root).stdout  # numpy loads after the tuning


def test_text_output_is_the_results_summary(exact_harvest: Path, db_path: Path) -> None:
    """The CLI prints `CalibrationResult.summary()`: the library caller gets the same text (issue 14)."""
    import re

    from calib.auto import auto_calibrate, auto_calibration_config
    from calib.config import load_settings
    from calib.engine.result import CalibrationResult

    res = _auto(exact_harvest, db_path)
    assert res.exit_code == 0, res.output
    config = auto_calibration_config("BTC", data_dir=exact_harvest, settings=load_settings(), as_of=END,
                                     lookback_days=2, dte_min=0)
    result: CalibrationResult = auto_calibrate(config, db_path).result
    text = result.summary(db_path)
    assert text.endswith(f"Recorded run {result.run_id} in {db_path}")
    assert result.failure_warning() is None

    def same(s: str) -> str:  # the run id and the run time differ between the two runs
        return re.sub(r"\(age .*\)", "", s.replace(result.run_id, "RUN"))

    cli_run_id = list_runs(db_path)["run_id"].to_list()
    cli_text = res.stdout.rstrip("\n")
    for rid in cli_run_id:
        cli_text = cli_text.replace(rid, result.run_id)
    assert same(cli_text) == same(text)

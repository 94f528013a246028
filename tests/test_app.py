"""The Streamlit dashboard under AppTest, one test per section, on files the real CLI wrote.

The history file is built by `calib` commands (typer CliRunner) on demo
harvests; expected values are read back from DuckDB directly and formatted
here, so the page is checked against the database, not against itself.
"""

from __future__ import annotations

import json
import shutil
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import duckdb
import pytest
from streamlit.testing.v1 import AppTest
from typer.testing import CliRunner

from calib.config import PolicyConfig
from calib.data.demo import DemoSpec, generate_demo_harvest
from calib.store.connection import connect
from calib.store.migrations import migrate
from cli import app as cli_app

ROOT = Path(__file__).resolve().parents[1]
APP = ROOT / "app.py"
END = datetime(2026, 1, 9, 12, 0, tzinfo=UTC)
EXPLANATION = (
    "Auto-calibrations use harvested Deribit data and the same calibration engine as the live UI. "
    "Each run is scored as OK, Degraded, or Failed based on data quality, error magnitude, and "
    "multiplier sanity. Failed runs are recorded for debugging only and are not used to update the "
    "vol surface."
)
runner = CliRunner()


# --------------------------------------------------------------------------- helpers


def _iso(ts: datetime) -> str:
    return ts.isoformat().replace("+00:00", "Z")


def _cli(*args: str, code: int = 0) -> None:
    res = runner.invoke(cli_app, list(args))
    assert res.exit_code == code, res.output


def _auto(db: Path, root: Path, as_of: datetime, code: int = 0) -> None:
    _cli("auto-calibrate", "--underlying", "BTC", "--data-dir", str(root), "--as-of", _iso(as_of),
         "--lookback-days", "2", "--db", str(db), code=code)


def _live(db: Path, root: Path, code: int = 0) -> None:
    _cli("calibrate-live", "--underlying", "BTC", "--replay", str(root), "--db", str(db), code=code)


def _rows(db: Path, sql: str, params: list[Any] | None = None) -> list[dict[str, Any]]:
    con = duckdb.connect(str(db), read_only=True)
    try:
        cur = con.execute(sql, params or [])
        names = [d[0] for d in cur.description]
        return [dict(zip(names, r, strict=True)) for r in cur.fetchall()]
    finally:
        con.close()


class _Tables(HTMLParser):
    """Rows of every <table id=...> in an HTML snippet: cell texts plus the row's attributes."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: dict[str, list[dict[str, Any]]] = {}
        self._table: str | None = None
        self._row: dict[str, Any] | None = None
        self._cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "table":
            self._table = a.get("id", "")
            self.tables[self._table] = []
        elif tag == "tr" and self._table is not None:
            self._row = {"attrs": a, "cells": [], "badges": []}
        elif tag in ("td", "th") and self._row is not None:
            self._cell = []
        elif tag == "span" and self._row is not None and "calib-badge" in a.get("class", ""):
            self._row["badges"].append(a.get("data-status"))

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._row is not None and self._cell is not None:
            self._row["cells"].append("".join(self._cell).strip())
            self._cell = None
        elif tag == "tr" and self._row is not None and self._table is not None:
            self.tables[self._table].append(self._row)
            self._row = None
        elif tag == "table":
            self._table = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)


def tables(at: AppTest) -> dict[str, list[dict[str, Any]]]:
    p = _Tables()
    for h in at.html:
        p.feed(h.value)
    return p.tables


def table(at: AppTest, table_id: str) -> tuple[list[str], list[dict[str, Any]]]:
    """(header cells, body rows) of one table; key-value tables have no header row."""
    rows = tables(at)[table_id]
    if rows and not rows[0]["attrs"].get("class"):
        return rows[0]["cells"], rows[1:]
    return [], rows


def column(at: AppTest, table_id: str, name: str) -> list[str]:
    head, body = table(at, table_id)
    i = head.index(name)
    return [r["cells"][i] for r in body]


def run_app(db: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, underlying: str = "BTC") -> AppTest:
    monkeypatch.setenv("CALIB_DB", str(db))
    monkeypatch.setenv("CALIB_CONFIG", str(tmp_path / "no-calib.toml"))
    at = AppTest.from_file(str(APP), default_timeout=30)
    if underlying != "BTC":
        at.run()
        at.sidebar.selectbox(key="underlying").set_value(underlying)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def texts(at: AppTest) -> str:
    parts = [m.value for m in at.markdown] + [c.value for c in at.caption] + [i.value for i in at.info]
    parts += [w.value for w in at.warning] + [e.value for e in at.error] + [c.value for c in at.code]
    parts += [s.value for s in at.success]
    return "\n".join(str(p) for p in parts)


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def harvests(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("demo")
    out = {}
    for scenario, days in (("normal", 9.0), ("usd_marks", 3.0)):
        out[scenario] = base / scenario
        generate_demo_harvest(out[scenario], DemoSpec(underlyings=("BTC",), end=END, days=days, scenario=scenario))
    return out


@pytest.fixture(scope="module")
def populated(tmp_path_factory: pytest.TempPathFactory, harvests: dict[str, Path]) -> Path:
    """A live replay the policy applies, then two OK auto-calibrations and one failed one."""
    db = tmp_path_factory.mktemp("db") / "history.duckdb"
    _live(db, harvests["normal"])
    _auto(db, harvests["normal"], END - timedelta(hours=12))
    _auto(db, harvests["normal"], END)
    _auto(db, harvests["usd_marks"], END, code=3)
    return db


@pytest.fixture
def db_copy(populated: Path, tmp_path: Path) -> Path:
    """A private copy for tests that write."""
    dst = tmp_path / "copy.duckdb"
    shutil.copy(populated, dst)
    return dst


def _live_run(db: Path) -> dict[str, Any]:
    rows = _rows(db, "SELECT run_id, status, reason, smoothed_multiplier, policy_decision, policy_reason, "
                     "n_samples, result::VARCHAR AS result FROM calibration_runs WHERE source = 'live' "
                     "ORDER BY created_at DESC LIMIT 1")
    row = rows[0]
    row["result"] = json.loads(row["result"])
    return row


def _applied(db: Path) -> dict[str, tuple[float, str]]:
    return {r["scope"]: (r["multiplier"], r["run_id"]) for r in _rows(
        db, "SELECT scope, multiplier, run_id FROM current_applied_multipliers WHERE underlying = 'BTC'")}


# --------------------------------------------------------------------------- empty and broken states


def test_missing_file_shows_guidance_and_creates_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    db = tmp_path / "nowhere" / "history.duckdb"
    at = run_app(db, monkeypatch, tmp_path)
    out = texts(at)
    assert f"No history file at `{db}` yet" in out
    assert "calib demo-db" in out
    assert "calib auto-calibrate --underlying BTC" in out
    assert not at.header  # no sections, no traceback
    assert not db.exists() and not db.parent.exists()


def test_empty_database_shows_guidance(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    db = tmp_path / "empty.duckdb"
    with connect(db, read_only=False):
        pass  # migrations only
    at = run_app(db, monkeypatch, tmp_path)
    out = texts(at)
    assert "has no calibration runs yet" in out
    assert "calib calibrate-live --underlying BTC --replay data/live_deribit" in out
    assert not at.error


def test_underlying_without_runs_says_which_command(populated: Path, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    at = run_app(populated, monkeypatch, tmp_path, underlying="ETH")
    out = texts(at)
    assert "No calibration runs for ETH yet; this file has BTC (4 runs)." in out
    assert "calib auto-calibrate --underlying ETH" in out
    assert "calib calibrate-live --underlying ETH" in out


def test_no_live_runs_yet(harvests: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    db = tmp_path / "auto-only.duckdb"
    _auto(db, harvests["normal"], END)
    at = run_app(db, monkeypatch, tmp_path)
    out = texts(at)
    assert "No live runs for BTC yet" in out
    assert "Nothing applied for BTC yet" in out
    assert at.button(key="force_apply").disabled
    # The detail sections fall back to the auto-calibration, the history shows it.
    assert column(at, "auto-history", "Status") == ["✓ OK"]
    assert table(at, "term-structure")[1]


def test_old_schema_rows_show_dashes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A file at schema v1 (before later columns existed) renders with '-' and is not migrated by reading."""
    db = tmp_path / "old.duckdb"
    con = duckdb.connect(str(db))
    migrate(con, upto=1)
    con.execute(
        "INSERT INTO calibration_runs (run_id, created_at, source, underlying, dte_min, dte_max, lookback_days, "
        "n_samples, recommended_multiplier, vega_weighted_mae_pct, mae_pct, status, reason, applied) "
        "VALUES ('BTC-old-1', TIMESTAMPTZ '2024-05-01 10:00:00+00', 'harvested', 'BTC', 3, 10, NULL, 1200, "
        "NULL, NULL, 12.5, 'ok', 'Calibration within thresholds', false)")
    con.close()
    at = run_app(db, monkeypatch, tmp_path)
    head, body = table(at, "auto-history")
    row = dict(zip(head, body[0]["cells"], strict=True))
    assert row["Date (UTC)"] == "2024-05-01 10:00"
    assert row["Lookback (days)"] == "-"
    assert row["Multiplier"] == "-"
    assert row["vMAE %"] == "-"
    assert row["MAE %"] == "12.50"
    assert row["Samples"] == "1,200"
    assert "No skew fit for this run" in texts(at)
    # The sections added later say the run predates them instead of drawing empty charts.
    out = texts(at)
    for what in ("no arbitrage check", "no per-expiry data", "no error map"):
        assert f"This run has {what} (it predates it" in out
    assert "No multiplier applied yet" in out
    assert _rows(db, "SELECT max(version) AS v FROM schema_migrations")[0]["v"] == 1


def test_unreadable_file_shows_an_error_not_a_traceback(db_copy: Path, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """While another process holds the file read-write past the retry time, the page says so."""
    import subprocess
    import sys

    monkeypatch.setenv("CALIB_LOCK_RETRY_S", "0.5")
    writer = subprocess.Popen([sys.executable, "-c", "import duckdb, sys, time; c = duckdb.connect(sys.argv[1]); "
                               "print('locked', flush=True); time.sleep(30)", str(db_copy)],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert writer.stdout is not None and writer.stdout.readline().strip() == "locked"
        at = run_app(db_copy, monkeypatch, tmp_path)
    finally:
        writer.kill()
        writer.communicate()
    assert any(f"Cannot read the history file `{db_copy}`" in e.value and "locked by another process" in e.value
               for e in at.error)
    assert "press Refresh to try again" in texts(at)
    assert not at.header


def test_zero_byte_file_is_reported_as_empty_not_as_locked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    db = tmp_path / "history.duckdb"
    db.touch()
    at = run_app(db, monkeypatch, tmp_path)
    assert any("is empty (0 bytes)" in e.value for e in at.error)
    assert "press Refresh" not in texts(at) and "may hold" not in texts(at)


# --------------------------------------------------------------------------- sections


def test_sections_in_spec_order(populated: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    at = run_app(populated, monkeypatch, tmp_path)
    assert [h.value for h in at.header] == [
        "Calibration vs Deribit", "Term Structure", "Skew Fit Analysis", "IV Calibration Update Policy",
        "Calibration History (Auto-Calibrate)", "Recent live runs", "Backtest",
    ]
    assert "Option-type metrics" in [s.value for s in at.subheader]
    assert at.title[0].value == "IV calibration · BTC"


def test_calibration_vs_deribit_matches_latest_live_run(populated: Path, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    live = _live_run(populated)
    gm = live["result"]["global_metrics"]
    at = run_app(populated, monkeypatch, tmp_path)
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Multiplier tested"] == f"{gm['multiplier_tested']:.4f}"
    assert metrics["MAE %"] == f"{gm['tested']['mae_pct']:.2f} %"
    assert metrics["vMAE %"] == f"{gm['tested']['vega_weighted_mae_pct']:.2f} %"
    assert metrics["Bias %"] == f"{gm['tested']['bias_pct']:.2f} %"
    assert metrics["Recommended multiplier"] == f"{gm['recommended_iv_multiplier']:.4f}"
    assert metrics["RV_7d"] == f"{gm['rv_7d_pct']:.2f} %"
    assert metrics["ATM IV"] == f"{gm['atm_iv_pct']:.2f} %"
    assert metrics["Samples"] == f"{live['n_samples']:,}"
    run_line = next(h.value for h in at.html if "calib-run-line" in h.value)
    assert live["run_id"] in run_line
    assert f'data-status="{live["status"]}"' in run_line
    # issue 12: the chain's time and age beside the run time; the current-skew multiplier the policy applies
    newest = datetime.fromisoformat(live["result"]["window"]["newest_snapshot"])
    assert f'chain {newest.astimezone(UTC):%Y-%m-%d %H:%M} UTC (age ' in run_line
    cs = gm["recommended_iv_multiplier_current_skew"]
    assert metrics["Current-skew multiplier"] == (f"{cs:.4f}" if cs is not None else "-")
    _, errors = table(at, "live-errors")
    assert errors[1]["cells"][1:4] == [f"{gm['recommended_iv_multiplier']:.4f}", f"{gm['mae_pct']:.2f}",
                                       f"{gm['vega_weighted_mae_pct']:.2f}"]


def test_option_type_metrics(populated: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    live = _live_run(populated)
    at = run_app(populated, monkeypatch, tmp_path)
    head, body = table(at, "option-types")
    assert head == ["Type", "Samples", "MAE %", "vMAE %", "Bias %", "MAE (vol pts)"]
    expected = [[{"C": "Calls", "P": "Puts"}[o["option_type"]], f"{o['n_samples']:,}", f"{o['mae_pct']:.2f}",
                 f"{o['vega_weighted_mae_pct']:.2f}", f"{o['bias_pct']:.2f}", f"{o['mae_vol_points']:.2f}"]
                for o in live["result"]["option_type_metrics"]]
    assert [r["cells"] for r in body] == expected


def test_term_structure(populated: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    live = _live_run(populated)
    at = run_app(populated, monkeypatch, tmp_path)
    head, body = table(at, "term-structure")
    assert head[:7] == ["Bucket", "DTE Range (days)", "Samples", "MAE %", "vMAE %", "Bias %", "Rec. IV Mult"]
    bands = live["result"]["bands"]
    assert [r["cells"][0] for r in body] == ["Global fit"] + [b["name"].title() for b in bands]
    for row, b in zip(body[1:], bands, strict=True):
        assert row["cells"][1] == f"{b['dte_min']:g}–{b['dte_max']:g}"
        assert row["cells"][2] == f"{b['n_samples']:,}"
        assert row["cells"][4] == f"{b['vega_weighted_mae_pct']:.2f}"
        assert row["cells"][6] == f"{b['recommended_iv_multiplier']:.4f}"
        assert row["cells"][8] == {"ok": "ok", "too_few_samples": "too few samples: not applied"}[b["status"]]


def test_skew_fit_analysis(populated: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sk = _live_run(populated)["result"]["skew"]
    at = run_app(populated, monkeypatch, tmp_path)
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Skew misfit (RMS)"] == f"{sk['misfit']:.4f}"
    assert metrics["Max |diff|"] == f"{sk['max_abs_diff']:.4f}"
    assert metrics["At anchor z"] == f"{sk['largest_diff_anchor']:+.1f}"
    head, body = table(at, "skew-anchors")
    assert head == ["Anchor z", "Current ratio", "Recommended ratio", "Diff", "Quotes"]
    assert [r["cells"][1] for r in body] == [f"{c:.4f}" for c in sk["current"]]
    assert [r["cells"][2] for r in body] == [f"{c:.4f}" for c in sk["recommended"]]
    highlighted = [r for r in body if "calib-row-highlight" in r["attrs"]["class"]]
    assert len(highlighted) == 1
    assert highlighted[0]["cells"][0] in (f"{sk['largest_diff_anchor']:+.1f}", "0 (ATM)")
    charts = at.get("vega_lite_chart")
    # ATM term structure, multiplier by expiry, error map, skew ratios, smile, smile per expiry by K/F and by z,
    # history multiplier and vMAE, vol over time, applied multipliers over time
    assert len(charts) == 11


def test_update_policy_section(populated: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    live = _live_run(populated)
    applied = _applied(populated)
    at = run_app(populated, monkeypatch, tmp_path)
    head, body = table(at, "policy-settings")
    settings = dict(zip(head, body[0]["cells"], strict=True))
    default = PolicyConfig()
    assert settings["EWMA weight"] == f"{default.ewma_alpha:.2f}"
    assert settings["Deadband"] == f"{default.deadband:.4f}"
    assert settings["Max step"] == f"{default.max_step:.4f}"
    assert settings["Cooldown (min)"] == f"{default.cooldown_minutes:g}"
    assert settings["Min samples"] == f"{default.min_samples:,}"
    assert settings["Max vMAE %"] == f"{default.max_vega_mae_pct:.2f}"
    assert "Built-in defaults" in texts(at)
    card = {r["cells"][0]: r for r in table(at, "latest-run")[1]}
    assert card["Run"]["cells"][1] == live["run_id"]
    assert card["Source"]["cells"][1] == "live (replay)"
    assert card["Smoothed"]["cells"][1] == f"{live['smoothed_multiplier']:.4f}"
    assert card["Decision"]["cells"][1] == "Applied"
    assert card["Reason"]["cells"][1] == live["policy_reason"]
    _, body = table(at, "applied-multipliers")
    shown = {r["cells"][0].lower(): r for r in body}
    assert set(shown) == set(applied)
    for scope, (mult, run_id) in applied.items():
        assert shown[scope]["cells"][1] == f"{mult:.4f}"
        assert shown[scope]["attrs"]["data-run-id"] == run_id
    # The live run was applied by the policy, so Force-Apply has nothing to do.
    assert at.button(key="force_apply").disabled
    assert "already applied" in texts(at)


def test_policy_settings_come_from_the_settings_file(populated: Path, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    toml = tmp_path / "calib.toml"
    toml.write_text("[policy]\ndeadband = 0.05\ncooldown_minutes = 15\nmin_samples = 200\n")
    monkeypatch.setenv("CALIB_DB", str(populated))
    monkeypatch.setenv("CALIB_CONFIG", str(toml))
    at = AppTest.from_file(str(APP), default_timeout=30).run()
    assert not at.exception
    head, body = table(at, "policy-settings")
    settings = dict(zip(head, body[0]["cells"], strict=True))
    assert (settings["Deadband"], settings["Cooldown (min)"], settings["Min samples"]) == ("0.0500", "15", "200")
    assert f"From {toml}." in texts(at)


def test_history_badges_reasons_and_dimmed_failed_row(populated: Path, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    runs = _rows(populated, "SELECT run_id, status, reason, recommended_multiplier AS m, n_samples "
                            "FROM calibration_runs WHERE source = 'harvested'")
    at = run_app(populated, monkeypatch, tmp_path)
    assert EXPLANATION in [i.value for i in at.info]
    head, body = table(at, "auto-history")
    assert head == ["Date (UTC)", "Status", "DTE Range (days)", "Lookback (days)", "Multiplier", "vMAE %", "MAE %",
                    "Samples", "Reason"]
    by_id = {r["attrs"]["data-run-id"]: r for r in body}
    assert set(by_id) == {r["run_id"] for r in runs}
    for run in runs:
        row = by_id[run["run_id"]]
        assert row["badges"] == [run["status"]]
        assert row["attrs"]["data-status"] == run["status"]
        assert row["cells"][8] == run["reason"]
        # a run whose data quality failed has no multiplier: NULL in the store, a dash here (issue 12)
        assert row["cells"][4] == ("-" if run["m"] is None else f"{run['m']:.4f}")
        assert row["cells"][7] == f"{run['n_samples']:,}"
    failed = [r for r in body if r["attrs"]["data-status"] == "failed"]
    assert len(failed) == 1
    assert "calib-row-failed" in failed[0]["attrs"]["class"]
    assert "opacity:0.55" in failed[0]["attrs"]["style"]
    assert failed[0]["cells"][1] == "⚠ Failed"
    assert "marks_not_in_coin" in failed[0]["cells"][8]
    assert failed[0]["cells"][4:7] == ["-", "-", "-"]
    ok = [r for r in body if r["attrs"]["data-status"] == "ok"]
    assert len(ok) == 2 and all("opacity" not in r["attrs"]["style"] for r in ok)
    # Badge colours: OK green, Failed red.
    html_text = next(h.value for h in at.html if 'id="auto-history"' in h.value)
    assert 'data-status="ok" style="' in html_text and "background:#1e8e3e" in html_text
    assert "background:#d93025" in html_text
    assert "Latest 3 runs: 2 OK · 0 Degraded · 1 Failed" in texts(at)


def test_recent_live_runs(populated: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    live = _live_run(populated)
    at = run_app(populated, monkeypatch, tmp_path)
    head, body = table(at, "live-runs")
    assert len(body) == 1
    row = dict(zip(head, body[0]["cells"], strict=True))
    assert row["Smoothed"] == f"{live['smoothed_multiplier']:.4f}"
    assert row["Decision"] == "Applied"
    assert row["Chain"].startswith("replay ")
    assert row["Policy reason"] == live["policy_reason"]


# --------------------------------------------------------------------------- the one write: Force-Apply


def test_force_apply_with_confirmation_sets_applied_to_smoothed(
    db_copy: Path, harvests: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _live(db_copy, harvests["normal"])  # seconds after the first apply: skipped by the policy
    live = _live_run(db_copy)
    assert live["policy_decision"] == "skipped"
    before = _applied(db_copy)
    assert before["global"][1] != live["run_id"]

    at = run_app(db_copy, monkeypatch, tmp_path)
    assert not at.button(key="force_apply").disabled
    at.button(key="force_apply").click().run()
    assert any(live["run_id"] in w.value and "Forced by user" in w.value for w in at.warning)
    assert _applied(db_copy) == before  # nothing written before confirmation

    at.button(key="force_apply_confirm").click().run()
    assert not at.exception
    after = _applied(db_copy)
    assert after["global"] == (pytest.approx(live["smoothed_multiplier"]), live["run_id"])
    assert any(f"global {live['smoothed_multiplier']:.4f}" in s.value for s in at.success)
    _, body = table(at, "applied-multipliers")
    glob = next(r for r in body if r["cells"][0] == "Global")
    assert glob["cells"][1] == f"{live['smoothed_multiplier']:.4f}"
    assert glob["attrs"]["data-run-id"] == live["run_id"]
    card = {r["cells"][0]: r["cells"][1] for r in table(at, "latest-run")[1]}
    assert card["Decision"] == "Applied" and card["Reason"] == "Forced by user"
    assert at.button(key="force_apply").disabled


def test_force_apply_cancel_writes_nothing(db_copy: Path, harvests: dict[str, Path], tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    _live(db_copy, harvests["normal"])
    before = _applied(db_copy)
    at = run_app(db_copy, monkeypatch, tmp_path)
    at.button(key="force_apply").click().run()
    at.button(key="force_apply_cancel").click().run()
    assert not at.warning
    assert _applied(db_copy) == before


def test_force_apply_refused_for_failed_latest_run(db_copy: Path, harvests: dict[str, Path], tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    _live(db_copy, harvests["usd_marks"], code=3)
    at = run_app(db_copy, monkeypatch, tmp_path)
    assert at.button(key="force_apply").disabled
    assert "Force-Apply refuses failed runs" in texts(at)
    assert any("The latest live run failed" in w.value for w in at.warning)


def test_failed_data_quality_live_run_shows_dashes(db_copy: Path, harvests: dict[str, Path], tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    # issue 12 defect 10: USD marks fail data quality; no fitted number is stored or shown (was 1.1924, 100.00)
    _live(db_copy, harvests["usd_marks"], code=3)
    live = _live_run(db_copy)
    assert live["result"]["global_metrics"]["recommended_iv_multiplier"] is None
    at = run_app(db_copy, monkeypatch, tmp_path)
    metrics = {m.label: m.value for m in at.metric}
    for label in ("Recommended multiplier", "Current-skew multiplier", "MAE %", "vMAE %", "Bias %"):
        assert metrics[label] == "-", label
    _, errors = table(at, "live-errors")
    assert errors[1]["cells"][1:4] == ["-", "-", "-"]


def test_refresh_shows_runs_written_while_open(db_copy: Path, harvests: dict[str, Path], tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    at = run_app(db_copy, monkeypatch, tmp_path)
    assert len(table(at, "auto-history")[1]) == 3
    _auto(db_copy, harvests["normal"], END - timedelta(hours=6))  # the CLI writes while the app is open
    at.run()  # the next page run shows it: the cache is keyed on the file's change marker
    assert len(table(at, "auto-history")[1]) == 4
    at.sidebar.button(key="refresh_button").click().run()
    assert len(table(at, "auto-history")[1]) == 4


def test_every_session_sees_a_cli_force_apply_at_once(db_copy: Path, harvests: dict[str, Path], tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 13, defect 2: the cache is shared by sessions; a write from anywhere shows on the next load."""
    _live(db_copy, harvests["normal"])  # skipped by the policy (cooldown): Force-Apply has work to do
    live = _live_run(db_copy)
    first, second = run_app(db_copy, monkeypatch, tmp_path), run_app(db_copy, monkeypatch, tmp_path)
    assert not first.button(key="force_apply").disabled
    _cli("apply", "--force", "--underlying", "BTC", "--db", str(db_copy))
    for at in (first.run(), second.run(), run_app(db_copy, monkeypatch, tmp_path)):
        glob = next(r for r in table(at, "applied-multipliers")[1] if r["cells"][0] == "Global")
        assert glob["cells"][1] == f"{live['smoothed_multiplier']:.4f}"
        assert glob["attrs"]["data-run-id"] == live["run_id"]
        card = {r["cells"][0]: r["cells"][1] for r in table(at, "latest-run")[1]}
        assert card["Decision"] == "Applied" and card["Reason"] == "Forced by user"
        assert at.button(key="force_apply").disabled


def test_force_apply_confirmation_names_from_and_to_for_every_scope(
        db_copy: Path, harvests: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _live(db_copy, harvests["normal"])
    live = _live_run(db_copy)
    before = _rows(db_copy, "SELECT scope, multiplier FROM applied_multipliers WHERE underlying = 'BTC'")
    bands = {k: v for k, v in live["result"]["policy"]["smoothed_bands"].items() if v is not None}
    assert bands  # the demo run smooths every band
    at = run_app(db_copy, monkeypatch, tmp_path)
    at.button(key="force_apply").click().run()
    (warning,) = [w.value for w in at.warning if live["run_id"] in w.value]
    old = {r["scope"]: r["multiplier"] for r in before}
    for scope, new in {"global": live["smoothed_multiplier"], **bands}.items():
        assert f"{scope.title()} {old[scope]:.4f} → **{new:.4f}**" in warning


# --------------------------------------------------------------------------- where the model is wrong


def _chart_tables(at: AppTest) -> list[tuple[dict[str, Any], list[dict[str, Any]]]]:
    """Every vega-lite chart as (spec, rows of its first dataset)."""
    import pyarrow as pa

    out = []
    for c in at.get("vega_lite_chart"):
        spec = json.loads(c.proto.spec)
        rows = pa.ipc.open_stream(c.proto.datasets[0].data.data).read_all().to_pylist() if c.proto.datasets else []
        out.append((spec, rows))
    return out


def _chart(at: AppTest, axis_title: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The one chart with an axis titled `axis_title` (in any layer)."""
    found = [(spec, rows) for spec, rows in _chart_tables(at) if f'"title": "{axis_title}"' in json.dumps(spec)]
    assert len(found) == 1, [json.dumps(s)[:200] for s, _ in _chart_tables(at)]
    return found[0]


def test_static_arbitrage_table(populated: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    a = _live_run(populated)["result"]["arbitrage"]
    at = run_app(populated, monkeypatch, tmp_path)
    assert "Static arbitrage" in [s.value for s in at.subheader]
    head, body = table(at, "arbitrage")
    assert head == ["Surface", "Points checked", "Butterfly", "Calendar", "First violation", "Worst violation"]
    assert [r["cells"][0] for r in body] == ["Recommended surface", "Current surface", "Market marks"]
    for row, part in zip(body, (a, a["current"], a["market"]), strict=True):
        assert row["cells"][1:4] == [f"{part['checked_points']:,}", f"{part['butterfly_violations']:,}",
                                     f"{part['calendar_violations']:,}"]
    assert a["checked_points"] > 0 and a["butterfly_violations"] == a["calendar_violations"] == 0
    assert body[0]["cells"][4] == "-" and body[0]["attrs"]["data-status"] == "ok"


def test_error_map_heatmap(populated: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    em = _live_run(populated)["result"]["error_map"]
    at = run_app(populated, monkeypatch, tmp_path)
    assert "Error map by DTE and moneyness" in [s.value for s in at.subheader]
    spec, rows = _chart(at, "Moneyness bucket (z)")
    cells = {(i, j): n for i, r in enumerate(em["counts"]) for j, n in enumerate(r) if n}
    assert len(rows) == len(cells) > 3
    for r in rows:
        i, j = r["dte_order"], r["z_order"]
        assert r["Quotes"] == cells[(i, j)]
        assert r["mean_err_vol_points"] == pytest.approx(em["mean_err_vol_points"][i][j])
    assert '"field": "mean_err_vol_points"' in json.dumps(spec)
    # Absolute % of the current model: another colour field and the tested map's values.
    at.button_group(key="error_map_measure").set_value("|% of mark|")
    at.button_group(key="error_map_model").set_value("Current")
    at.run()
    spec, rows = _chart(at, "Moneyness bucket (z)")
    assert '"field": "mean_abs_err_pct"' in json.dumps(spec)
    tested = em["tested"]
    for r in rows:
        assert r["mean_abs_err_pct"] == pytest.approx(tested["mean_abs_err_pct"][r["dte_order"]][r["z_order"]])


def _flat(pairs: list[tuple[float, ...]]) -> list[float]:
    """Pairs as one flat list: pytest.approx compares flat sequences only."""
    return [v for pair in pairs for v in pair]


def test_term_structure_chart_per_listed_expiry(populated: Path, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    exps = _live_run(populated)["result"]["expiries"]
    at = run_app(populated, monkeypatch, tmp_path)
    _, rows = _chart(at, "ATM implied vol (%)")
    market = sorted((r["dte"], r["iv_pct"]) for r in rows if r["series"] == "Market ATM IV")
    assert _flat(market) == pytest.approx(_flat(sorted((e["dte_days"], e["atm_market_iv_pct"]) for e in exps)))
    rec = sorted((r["dte"], r["iv_pct"]) for r in rows if r["series"] == "Model, recommended")
    assert _flat(rec) == pytest.approx(_flat(sorted((e["dte_days"], e["atm_recommended_iv_pct"]) for e in exps)))
    _, mult = _chart(at, "IV multiplier")
    got = sorted((r["dte"], r["multiplier"]) for r in mult if r["series"] == "Model, recommended")
    assert _flat(got) == pytest.approx(_flat(sorted((e["dte_days"], e["multiplier_recommended"]) for e in exps)))
    assert len({m for _, m in got}) >= 2  # band multipliers differ across the term structure


def test_smile_per_expiry_selector(populated: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    result = _live_run(populated)["result"]
    exps = result["expiries"]
    at = run_app(populated, monkeypatch, tmp_path)
    assert "Smile per expiry" in [s.value for s in at.subheader]
    box = at.selectbox(key=f"smile_expiry_{result['run_id']}")
    default = next(i for i, e in enumerate(exps) if result["dte_min"] <= e["dte_days"] <= result["dte_max"])
    assert box.value == default
    assert box.options[default].startswith(exps[default]["expiry"])
    _, by_k = _chart(at, "Strike / forward (K/F)")
    market = sorted((r["strike_rel"], r["iv_pct"]) for r in by_k if r["series"] == "Market (mark IV)")
    assert _flat(market) == pytest.approx(_flat(sorted(zip(exps[default]["strike_rel"],
                                                           exps[default]["market_iv_pct"], strict=True))))
    _, by_z = _chart(at, "Standardized moneyness z (recommended)")
    assert {r["series"] for r in by_z} == {"Market (mark IV)", "Model, current skew", "Model, recommended skew"}
    last = len(exps) - 1
    box.set_value(last)
    at.run()
    _, by_k = _chart(at, "Strike / forward (K/F)")
    assert len([r for r in by_k if r["series"] == "Market (mark IV)"]) == len(exps[last]["strike_rel"])


def test_history_over_time_charts(populated: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    runs = _rows(populated, "SELECT rv_7d_pct, atm_iv_pct FROM calibration_runs WHERE underlying = 'BTC' "
                            "AND status <> 'failed'")
    log = _rows(populated, "SELECT scope, new_multiplier FROM applied_multipliers_log WHERE underlying = 'BTC'")
    at = run_app(populated, monkeypatch, tmp_path)
    _, vols = _chart(at, "Vol (%)")
    assert sorted(r["vol_pct"] for r in vols if r["series"] == "RV_7d") == pytest.approx(
        sorted(r["rv_7d_pct"] for r in runs))
    assert sorted(r["vol_pct"] for r in vols if r["series"] == "ATM IV") == pytest.approx(
        sorted(r["atm_iv_pct"] for r in runs))
    _, applied = _chart(at, "Applied multiplier")
    assert len(applied) == len(log) > 0
    assert sorted(r["multiplier"] for r in applied) == pytest.approx(sorted(r["new_multiplier"] for r in log))
    # The multiplier history is scaled to its runs: the 0.7 / 1.6 guardrails are off-scale, so not drawn.
    spec, _ = _chart(at, "Recommended multiplier")
    text = json.dumps(spec)
    lo, hi = next(layer["encoding"]["y"]["scale"]["domain"] for layer in spec["layer"]
                  if layer["encoding"]["y"].get("field") == "plotted")
    assert 0.7 < lo < hi < 1.6 and hi - lo < 0.5
    assert "guardrail" not in text


def test_history_chart_shows_guardrails_only_in_view() -> None:
    import polars as pl

    from calib.ui.charts import history_chart

    def spec(values: list[float]) -> str:
        runs = pl.DataFrame({"window_end": [END - timedelta(hours=i) for i in range(len(values))],
                             "status": ["ok"] * len(values), "recommended_multiplier": values})
        return json.dumps(history_chart(runs, "Multiplier", title="m", bounds=(0.7, 1.6)).to_dict())

    assert "guardrail min" not in spec([1.1045, 1.1217]) and "guardrail max" not in spec([1.1045, 1.1217])
    near = spec([0.705, 0.75])  # the lower guardrail inside the padded range
    assert "guardrail min" in near and "guardrail max" not in near


def test_new_sections_on_the_demo_history(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`calib demo-db`'s history: every new section renders with data, the demo has no static arbitrage."""
    _cli("demo-db", "--db", str(tmp_path / "demo.duckdb"), "--data-dir", str(tmp_path / "harvests"))
    at = run_app(tmp_path / "demo.duckdb", monkeypatch, tmp_path)
    subs = [s.value for s in at.subheader]
    for title in ("Static arbitrage", "ATM term structure by listed expiry", "Error map by DTE and moneyness",
                  "Smile per expiry", "Vol and applied multipliers over time"):
        assert title in subs
    _, body = table(at, "arbitrage")
    assert [r["cells"][2:4] for r in body[:2]] == [["0", "0"], ["0", "0"]]
    for axis in ("Moneyness bucket (z)", "ATM implied vol (%)", "Strike / forward (K/F)", "Vol (%)",
                 "Applied multiplier"):
        assert _chart(at, axis)[1], axis
    assert "predates" not in texts(at)


def test_new_sections_absent_on_an_empty_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    db = tmp_path / "empty.duckdb"
    with connect(db, read_only=False):
        pass
    at = run_app(db, monkeypatch, tmp_path)
    assert not at.subheader and not at.get("vega_lite_chart") and "arbitrage" not in tables(at)

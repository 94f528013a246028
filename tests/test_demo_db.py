"""`populate_demo_db`: a realistic history file in one step, and the app renders it."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import pytest
from streamlit.testing.v1 import AppTest

from calib.demo_db import DemoDbSummary, populate_demo_db
from calib.errors import InvalidInputError

ROOT = Path(__file__).resolve().parents[1]
NOW = datetime(2026, 2, 6, 12, 30, tzinfo=UTC)


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[DemoDbSummary, list[str], float]:
    base = tmp_path_factory.mktemp("demo-db")
    lines: list[str] = []
    t0 = time.perf_counter()
    summary = populate_demo_db(base / "history.duckdb", base / "harvests", now=NOW, progress=lines.append)
    return summary, lines, time.perf_counter() - t0


def _q(db: Path, sql: str) -> list[tuple]:  # type: ignore[type-arg]
    con = duckdb.connect(str(db), read_only=True)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


def test_summary_has_every_status_and_decision(demo: tuple[DemoDbSummary, list[str], float]) -> None:
    summary, lines, elapsed = demo
    assert set(summary.auto_runs) == {"ok", "degraded", "failed"}
    assert summary.auto_runs["failed"] == 2 and summary.auto_runs["degraded"] == 1
    assert summary.live_runs["applied"] >= 2 and summary.live_runs["skipped"] >= 3
    assert summary.forced is not None and not summary.forced.already_applied
    assert summary.applied_global["BTC"] == pytest.approx(summary.forced.multiplier)
    assert summary.applied_global["ETH"] is not None
    assert set(summary.harvests) == {"normal", "usd_marks", "mult_at_bound", "outage"}
    assert any(line.startswith("force-apply BTC") for line in lines)
    assert elapsed < 60  # ~7 s here; the CLI promise is "a few seconds"


def test_history_file_contents(demo: tuple[DemoDbSummary, list[str], float]) -> None:
    summary = demo[0]
    db = summary.db_path
    rows = _q(db, "SELECT source, status, count(*), bool_or(applied) FROM calibration_runs "
                  "WHERE underlying = 'BTC' GROUP BY ALL ORDER BY ALL")
    harvested = {status: (n, applied) for source, status, n, applied in rows if source == "harvested"}
    assert harvested == {"degraded": (1, False), "failed": (2, False), "ok": (8, False)}
    reasons = {r[0] for r in _q(db, "SELECT reason FROM calibration_runs WHERE status = 'failed'")}
    assert any("marks_not_in_coin" in r for r in reasons)
    assert any(r.startswith("Unrealistic auto-calibration") for r in reasons)
    # Auto-calibration windows end at different times across the harvest.
    ends = _q(db, "SELECT count(DISTINCT window_end) FROM calibration_runs WHERE source = 'harvested' "
                  "AND underlying = 'BTC'")[0][0]
    assert ends == 11
    # The last BTC live run was force-applied; the policy skipped some and applied the first.
    live = _q(db, "SELECT policy_decision, policy_reason, status FROM calibration_runs "
                  "WHERE source = 'live' AND underlying = 'BTC' ORDER BY created_at")
    assert live[0][0] == "applied"
    assert live[-1][:2] == ("applied", "Forced by user")
    assert ("skipped", "failed") in {(d, s) for d, _, s in live}


def test_demo_runs_have_no_arbitrage_and_every_new_aggregate(demo: tuple[DemoDbSummary, list[str], float]) -> None:
    """No false positives: the demo's recommended and current surfaces pass the static-arbitrage checks."""
    import json

    rows = _q(demo[0].db_path, "SELECT status, result FROM calibration_runs WHERE status <> 'failed'")
    assert len(rows) >= 10
    for _status, text in rows:
        r = json.loads(text)
        a = r["arbitrage"]
        assert a["checked_points"] >= 41 * 5
        assert (a["butterfly_violations"], a["calendar_violations"]) == (0, 0), r["reason"]
        assert (a["current"]["butterfly_violations"], a["current"]["calendar_violations"]) == (0, 0)
        assert a["market"]["checked_points"] > 0  # a count of crossed marks, whatever it is
        assert "arbitrage" not in r["reason"]
        assert len(r["expiries"]) >= 5 and sum(map(sum, r["error_map"]["counts"])) > 0


def test_applied_state_invariant(demo: tuple[DemoDbSummary, list[str], float]) -> None:
    """The newest applied live run's smoothed multiplier is the current applied global one."""
    db = demo[0].db_path
    for und in ("BTC", "ETH"):
        newest = _q(db, f"SELECT run_id, smoothed_multiplier FROM calibration_runs WHERE underlying = '{und}' "
                        "AND source = 'live' AND applied ORDER BY applied_at DESC LIMIT 1")[0]
        current = _q(db, f"SELECT run_id, multiplier FROM current_applied_multipliers WHERE underlying = '{und}' "
                         "AND scope = 'global'")[0]
        assert current[0] == newest[0]
        assert current[1] == pytest.approx(newest[1])


def test_refuses_existing_file_unless_overwrite(demo: tuple[DemoDbSummary, list[str], float],
                                               tmp_path: Path) -> None:
    summary = demo[0]
    with pytest.raises(InvalidInputError, match="already exists"):
        populate_demo_db(summary.db_path, summary.data_root, now=NOW)
    db = tmp_path / "again.duckdb"
    db.write_bytes(b"")
    lines: list[str] = []
    again = populate_demo_db(db, summary.data_root, now=NOW, overwrite=True, underlyings=("ETH",),
                             progress=lines.append)
    assert any(line.startswith("reusing demo harvest") for line in lines)
    assert again.forced is None and set(again.auto_runs) == {"ok"}


def test_bad_underlying_is_refused(tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError, match="underlyings"):
        populate_demo_db(tmp_path / "x.duckdb", tmp_path / "h", underlyings=("DOGE",))


def test_app_renders_the_demo_file(demo: tuple[DemoDbSummary, list[str], float], tmp_path: Path,
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CALIB_DB", str(demo[0].db_path))
    monkeypatch.setenv("CALIB_CONFIG", str(tmp_path / "none.toml"))
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=30).run()
    assert not at.exception, [e.value for e in at.exception]
    history = next(h.value for h in at.html if 'id="auto-history"' in h.value)
    for status in ("ok", "degraded", "failed"):
        assert f'class="calib-badge calib-badge-{status}"' in history
    live = next(h.value for h in at.html if 'id="live-runs"' in h.value)
    assert 'data-decision="applied"' in live and 'data-decision="skipped"' in live

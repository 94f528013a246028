"""The app shows the live feed as down after exchange failures (issue 13, defect 7)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl
import pytest
from streamlit.testing.v1 import AppTest
from typer.testing import CliRunner

from calib.live_outage import live_feed_outage
from calib.queries import list_runs
from calib.ui import format as fmt
from cli import app as cli_app
from tests.fake_deribit import Fail, FakeDeribit

ROOT = Path(__file__).resolve().parents[1]
runner = CliRunner()


def test_live_feed_down_banner(exact_harvest: Path, fake: FakeDeribit, db_path: Path, tmp_path: Path,
                               monkeypatch: pytest.MonkeyPatch) -> None:
    res = runner.invoke(cli_app, ["calibrate-live", "-u", "BTC", "--replay", str(exact_harvest), "--dte-min", "0", "--db", str(db_path)])
    assert res.exit_code == 0, res.output
    fake.script("public/get_book_summary_by_currency", [Fail.rpc_error(11044, "not_open")] * 2)
    for _ in range(2):
        res = runner.invoke(cli_app, ["calibrate-live", "-u", "BTC", "--base-url", fake.base_url,
                                      "--db", str(db_path), "--source-timeout", "2"])
        assert res.exit_code == 3, res.output
    runs = list_runs(db_path, source="live")
    monkeypatch.setenv("CALIB_DB", str(db_path))
    monkeypatch.setenv("CALIB_CONFIG", str(tmp_path / "none.toml"))
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=30)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    (banner,) = [e.value for e in at.error if "Live feed down" in e.value]
    assert f"since {fmt.fmt_ts(runs['created_at'][1])} UTC (2 failed live run(s))" in banner
    assert f"last live run that reached Deribit: {fmt.fmt_ts(runs['created_at'][2])} UTC" in banner
    assert "Source unavailable: Deribit error for public/get_book_summary_by_currency" in banner
    assert at.button(key="force_apply").disabled  # the newest live run is the failed one


def test_live_feed_outage_from_runs() -> None:
    t = [datetime(2026, 1, 1, tzinfo=UTC) + timedelta(minutes=m) for m in (30, 20, 10, 0)]
    down, ok = "Source unavailable: Deribit answered HTTP 503", "Calibration within thresholds"
    frame = pl.DataFrame({"created_at": t, "reason": [down, down, ok, down]})
    outage = live_feed_outage(frame)
    assert outage is not None
    assert (outage.since, outage.failed_runs, outage.last_reached, outage.reason) == (t[1], 2, t[2], down)
    assert live_feed_outage(frame.slice(2)) is None
    everything_down = live_feed_outage(frame.with_columns(pl.lit(down).alias("reason")))
    assert everything_down is not None and everything_down.last_reached is None and everything_down.failed_runs == 4
    assert live_feed_outage(frame.clear()) is None
    assert live_feed_outage(frame.with_columns(pl.lit(None, pl.String).alias("reason"))) is None

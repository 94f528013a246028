"""CLI over the network-facing parts, against the local fake Deribit on 127.0.0.1."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
from typer.testing import CliRunner

from calib.data.layout import list_parquet_files
from cli import app
from tests.fake_deribit import Fail, FakeDeribit

runner = CliRunner()


def test_harvest_once_then_compact(fake: FakeDeribit, tmp_path: Path) -> None:
    data = tmp_path / "live"
    for _ in range(2):
        res = runner.invoke(app, ["harvest", "-u", "BTC", "-u", "ETH", "--once", "--data-dir", str(data),
                                  "--base-url", fake.base_url])
        assert res.exit_code == 0, res.output
    btc = list_parquet_files(data, "BTC")
    assert len(btc) == 2
    rows = pl.read_parquet(btc[0])
    assert rows["index_price"].drop_nulls().len() == rows.height
    assert not rows["instrument_name"].str.contains("USDC").any()
    day = btc[0].parent.name.removeprefix("date=")
    res = runner.invoke(app, ["compact", "-u", "BTC", "--data-dir", str(data), "--date", day])
    assert res.exit_code == 0, res.output
    after = list_parquet_files(data, "BTC")
    assert len(after) == 1
    assert pl.read_parquet(after[0]).height == 2 * rows.height


def test_harvest_unreachable_is_one_line(tmp_path: Path) -> None:
    res = runner.invoke(app, ["harvest", "-u", "BTC", "--once", "--data-dir", str(tmp_path),
                              "--base-url", "http://127.0.0.1:9/api/v2"])
    assert res.exit_code != 0
    assert "Traceback" not in res.output


def test_calibrate_live_from_fake_deribit_records_a_run(fake: FakeDeribit, tmp_path: Path) -> None:
    db = tmp_path / "h.duckdb"
    res = runner.invoke(app, ["calibrate-live", "-u", "BTC", "--base-url", fake.base_url, "--db", str(db),
                              "--dte-min", "0", "--dte-max", "40", "--json"])
    assert res.exit_code in (0, 3), res.output
    d = json.loads(res.stdout)
    assert d["source"] == "live"
    assert d["replay"] is False
    assert d["data_quality"]["rows_scanned"] > 0
    assert d["policy"]["decision"] in ("applied", "skipped")
    hist = runner.invoke(app, ["history", "--db", str(db), "--json"])
    assert json.loads(hist.stdout)[0]["run_id"] == d["run_id"]


def test_calibrate_live_source_error_is_clear(fake: FakeDeribit, tmp_path: Path) -> None:
    fake.script("public/get_book_summary_by_currency", [Fail.status_code(500)] * 10)
    res = runner.invoke(app, ["calibrate-live", "-u", "BTC", "--base-url", fake.base_url,
                              "--db", str(tmp_path / "h.duckdb"), "--source-timeout", "1"])
    assert res.exit_code == 3  # recorded as a failed live run (tests/test_live_outage.py)
    assert "Status: FAILED - Source unavailable: Deribit" in res.output
    assert "Traceback" not in res.output

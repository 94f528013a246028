"""Tardis options_chain -> `calib import-tardis` -> `calib auto-calibrate --as-of`: a full round trip.

A demo harvest is written out in the exact Tardis CSV layout (one update per
instrument a second before each hour), imported back, and calibrated; the
result must match calibrating the original harvest.
"""

from __future__ import annotations

import gzip
import json
from datetime import UTC, datetime
from pathlib import Path

import polars as pl
from typer.testing import CliRunner

from calib.data.demo import DemoSpec, generate_demo_harvest
from calib.data.tardis import TARDIS_OPTIONS_CHAIN_COLUMNS
from cli import app

runner = CliRunner()
END = datetime(2026, 3, 10, tzinfo=UTC)


def _to_tardis(harvest: Path, out_csv: Path, index_csv: Path) -> int:
    df = pl.read_parquet(sorted((harvest / "BTC").rglob("*.parquet")))
    us = pl.col("snapshot_ts").dt.epoch("us") - 1_000_000  # state one second before the boundary
    tardis = df.sort("snapshot_ts", "instrument_name").select(
        pl.lit("deribit").alias("exchange"),
        pl.col("instrument_name").alias("symbol"),
        us.alias("timestamp"),
        (us + 5_000).alias("local_timestamp"),
        pl.when(pl.col("option_type") == "C").then(pl.lit("call")).otherwise(pl.lit("put")).alias("type"),
        pl.col("strike").alias("strike_price"),
        pl.col("expiry_ts").dt.epoch("us").alias("expiration"),
        "open_interest",
        pl.lit(None, dtype=pl.Float64).alias("last_price"),
        "bid_price",
        pl.lit(1.0).alias("bid_amount"),
        "bid_iv",
        "ask_price",
        pl.lit(1.0).alias("ask_amount"),
        "ask_iv",
        "mark_price",
        "mark_iv",
        (pl.lit("BTC-") + pl.col("expiry_ts").dt.strftime("%-d%b%y").str.to_uppercase()).alias("underlying_index"),
        "underlying_price",
        "delta", "gamma", "vega", "theta",
        pl.lit(0.0).alias("rho"),
    )
    assert tardis.columns == list(TARDIS_OPTIONS_CHAIN_COLUMNS)
    # A row for a linear USDC option and one for ETH: the importer must skip both.
    junk = tardis.head(2).with_columns(pl.Series("symbol", ["BTC_USDC-10MAR26-60000-C", "ETH-27MAR26-2000-C"]))
    with gzip.open(out_csv, "wb") as fh:
        pl.concat([junk, tardis]).write_csv(fh)
    idx = df.group_by("snapshot_ts").agg(pl.col("index_price").first()).sort("snapshot_ts")
    idx.select((pl.col("snapshot_ts").dt.epoch("us") - 1_000_000).alias("timestamp"), "index_price").write_csv(
        index_csv)
    return tardis.height


def test_import_then_calibrate_matches_original(tmp_path: Path) -> None:
    harvest = tmp_path / "orig"
    generate_demo_harvest(harvest, DemoSpec(underlyings=("BTC",), end=END, days=9, step_minutes=60))
    csv, idx = tmp_path / "options_chain.csv.gz", tmp_path / "index.csv"
    n = _to_tardis(harvest, csv, idx)
    imported = tmp_path / "imported"
    res = runner.invoke(app, ["import-tardis", str(csv), "--underlying", "BTC", "--every", "1h",
                              "--data-dir", str(imported), "--index-file", str(idx), "--json"])
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout)
    assert summary["rows_read"] == n + 2
    assert summary["skipped"].get("linear_usdc") == 1
    assert summary["skipped"].get("other_underlying") == 1
    assert summary["snapshots_written"] >= 9 * 24 - 2

    as_of = "2026-03-09T22:00:00Z"
    args = ["auto-calibrate", "--underlying", "BTC", "--as-of", as_of, "--lookback-days", "1", "--json"]
    a = runner.invoke(app, [*args, "--data-dir", str(harvest), "--db", str(tmp_path / "a.duckdb")])
    b = runner.invoke(app, [*args, "--data-dir", str(imported), "--db", str(tmp_path / "b.duckdb")])
    assert a.exit_code == 0, a.output
    assert b.exit_code == 0, b.output
    da, db = json.loads(a.stdout), json.loads(b.stdout)
    assert db["status"] == "ok", db["reason"]
    ga, gb = da["global_metrics"], db["global_metrics"]
    # Same quotes, one second earlier and without zero-mark rows: the same calibration.
    assert abs(ga["recommended_iv_multiplier"] - gb["recommended_iv_multiplier"]) < 2e-3
    assert abs(ga["vega_weighted_mae_pct"] - gb["vega_weighted_mae_pct"]) < 0.5
    assert abs(ga["rv_7d_pct"] - gb["rv_7d_pct"]) < 0.5


def test_import_without_index_file_is_degraded_not_hidden(tmp_path: Path) -> None:
    harvest = tmp_path / "orig"
    generate_demo_harvest(harvest, DemoSpec(underlyings=("BTC",), end=END, days=9, step_minutes=60))
    csv, idx = tmp_path / "options_chain.csv.gz", tmp_path / "index.csv"
    _to_tardis(harvest, csv, idx)
    imported = tmp_path / "imported"
    assert runner.invoke(app, ["import-tardis", str(csv), "-u", "BTC", "--every", "1h",
                               "--data-dir", str(imported)]).exit_code == 0
    res = runner.invoke(app, ["auto-calibrate", "-u", "BTC", "--as-of", "2026-03-09T22:00:00Z",
                              "--lookback-days", "1", "--data-dir", str(imported),
                              "--db", str(tmp_path / "h.duckdb"), "--json"])
    d = json.loads(res.stdout)
    assert d["data_quality"]["rv_source"] == "nearest_forward"
    assert d["status"] in ("degraded", "failed")
    assert "rv_fallback" in {i["code"] for i in d["data_quality"]["issues"]}

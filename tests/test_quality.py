"""Data quality on broken harvests: units, schema, drift, corrupt files, coverage."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest
from hypothesis import given
from hypothesis import strategies as st

from calib.data.layout import atomic_write_parquet
from calib.data.quality import check_schema, required_columns_present
from calib.data.schema import REQUIRED_COLUMNS
from tests.synth import END, exact_market, rewrite_files, run_btc


def _codes(r) -> set[str]:  # type: ignore[no-untyped-def]
    return {i.code for i in r.data_quality.issues}


def test_usd_marks_fail(exact_harvest: Path) -> None:
    rewrite_files(exact_harvest, lambda df: df.with_columns(pl.col("mark_price") * pl.col("underlying_price")))
    r = run_btc(exact_harvest)
    assert r.status == "failed"
    assert r.data_quality.status == "failed"
    assert "marks_not_in_coin" in _codes(r)
    assert "marks_not_in_coin" in r.reason


def test_fraction_iv_fails(exact_harvest: Path) -> None:
    rewrite_files(exact_harvest, lambda df: df.with_columns(pl.col("mark_iv") / 100))
    r = run_btc(exact_harvest)
    assert r.status == "failed"
    assert "iv_not_in_percent" in _codes(r)


def test_missing_required_column_fails(exact_harvest: Path) -> None:
    rewrite_files(exact_harvest, lambda df: df.drop("underlying_price"))
    r = run_btc(exact_harvest)
    assert r.status == "failed"
    assert "missing_required_column" in _codes(r)
    assert "underlying_price" in next(i.message for i in r.data_quality.issues if i.code == "missing_required_column")


def test_missing_mark_iv_inverts_and_degrades(exact_harvest: Path) -> None:
    rewrite_files(exact_harvest, lambda df: df.drop("mark_iv"))
    r = run_btc(exact_harvest)
    assert r.status == "degraded"
    assert {"iv_inverted", "iv_inverted_rows"} <= _codes(r)
    assert r.global_metrics.recommended_iv_multiplier == pytest.approx(1.2, abs=1e-6)


def test_missing_index_falls_back_and_degrades(exact_harvest: Path) -> None:
    rewrite_files(exact_harvest, lambda df: df.drop("index_price"))
    r = run_btc(exact_harvest)
    assert r.status == "degraded"
    assert "rv_fallback" in _codes(r)
    assert r.data_quality.to_dict()["rv_source"] == "nearest_forward"


def test_schema_drift_and_corrupt_file(exact_harvest: Path) -> None:
    files = sorted((exact_harvest / "BTC").rglob("*.parquet"))
    # An older file written with naive ns timestamps, no expiry/strike/type columns (parsed from names).
    old = pl.read_parquet(files[-2])
    old = old.drop("expiry_ts", "strike", "option_type").with_columns(
        pl.col("snapshot_ts").dt.replace_time_zone(None).dt.cast_time_unit("ns"))
    atomic_write_parquet(old, files[-2])
    # A truncated file: half its bytes.
    data = files[-1].read_bytes()
    files[-1].write_bytes(data[: len(data) // 2])
    r = run_btc(exact_harvest)
    assert r.data_quality.files_skipped == 1
    assert "files_skipped" in _codes(r)
    assert "schema_drift" in _codes(r)
    assert r.status == "degraded"
    assert r.n_samples > 0
    assert r.global_metrics.recommended_iv_multiplier == pytest.approx(1.2, abs=1e-6)


def test_outage_lowers_coverage(tmp_path: Path) -> None:
    root = tmp_path / "h"
    df = exact_market(root, days=10)
    # Keep only the last 0.4 days of the 2-day window: coverage ~ 20% -> failed.
    cutoff = END.timestamp() - 0.4 * 86400
    rewrite_files(root, lambda d: d.filter((pl.col("snapshot_ts").dt.epoch("s") >= cutoff)
                                      | (pl.col("snapshot_ts").dt.epoch("s") < END.timestamp() - 2 * 86400)))
    r = run_btc(root)
    assert df.height > 0
    assert r.data_quality.coverage_pct is not None
    assert r.data_quality.coverage_pct < 25
    assert r.status == "failed"
    assert "low_coverage" in _codes(r)


def test_invalid_rows_are_counted(exact_harvest: Path) -> None:
    # Crossed books and NaN marks on a slice of rows: excluded by reason, > 5% invalid -> degraded.
    def breaker(df: pl.DataFrame) -> pl.DataFrame:
        n = df.height
        idx = pl.int_range(0, n)
        return df.with_columns(
            pl.when(idx % 10 == 0).then(float("nan")).otherwise(pl.col("mark_price")).alias("mark_price"),
            pl.when(idx % 10 == 1).then(0.2).otherwise(None).alias("bid_price"),
            pl.when(idx % 10 == 1).then(0.1).otherwise(None).alias("ask_price"),
        )
    rewrite_files(exact_harvest, breaker)
    r = run_btc(exact_harvest)
    ex = r.data_quality.excluded
    assert ex["missing_value"] > 0
    assert ex["crossed_book"] > 0
    assert r.data_quality.invalid_pct > 5
    assert r.status == "degraded"
    assert "invalid_rows" in _codes(r)


def test_min_tick_rows_excluded(exact_harvest: Path) -> None:
    rewrite_files(exact_harvest, lambda df: df.with_columns(pl.col("mark_price").clip(lower_bound=0.0001)))
    r = run_btc(exact_harvest)
    assert r.data_quality.excluded.get("min_tick", 0) > 0
    assert r.status == "ok"


def test_empty_directory_fails_cleanly(tmp_path: Path) -> None:
    (tmp_path / "BTC").mkdir()
    r = run_btc(tmp_path)
    assert r.status == "failed"
    assert r.n_samples == 0
    assert _codes(r) == {"no_data_in_window"}
    assert r.reason.startswith("Data quality failed (no_data_in_window): no readable quotes for BTC")


def test_corrupt_data_pages_are_skipped_not_fatal(exact_harvest: Path) -> None:
    f = sorted((exact_harvest / "BTC").rglob("*.parquet"))[-2]
    raw = bytearray(f.read_bytes())
    raw[len(raw) // 4 : len(raw) // 2] = b"\xab" * (len(raw) // 2 - len(raw) // 4)  # footer intact
    f.write_bytes(bytes(raw))
    r = run_btc(exact_harvest)
    assert r.data_quality.files_skipped == 1
    assert r.status == "degraded"
    # A day of index is gone, so RV (and the fit) shift a little; the run still stands.
    assert r.global_metrics.recommended_iv_multiplier == pytest.approx(1.2, abs=0.05)


@given(st.sets(st.sampled_from([*sorted(REQUIRED_COLUMNS), "mark_iv", "index_price", "bid_price", "extra"])))
def test_required_columns_present_agrees_with_check_schema(cols: set[str]) -> None:
    present = frozenset(cols)
    reported = any(i.code == "missing_required_column" for i in check_schema(present, frozenset()))
    assert required_columns_present(present) is not reported

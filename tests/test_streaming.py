"""The chunked (partition-by-partition) calibration path against the in-memory one."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from calib.calibration import run_historical_calibration_from_harvest
from calib.config import CalibrationConfig, HarvestConfig
from calib.data.demo import DemoSpec, generate_demo_harvest
from calib.data.reader import find_harvest_files
from calib.streaming import calibrate_chunked

END = datetime(2025, 3, 1, tzinfo=UTC)
# Keys that describe how a run was computed, not what it found.
RUN_KEYS = {"run_id", "created_at", "timings_s"}
PATH_KEYS = {"engine_path", "fit_sample_size", "fit_sample_stride", "chunks", "passes", "estimated_rows"}


def _harvest(root: Path, scenario: str = "normal") -> Path:
    spec = DemoSpec(underlyings=("BTC",), end=END, days=18, step_minutes=60, max_instruments=200,
                    scenario=scenario)  # fmt: skip
    generate_demo_harvest(root, spec)
    return root


@pytest.fixture(scope="module")
def harvest(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _harvest(tmp_path_factory.mktemp("stream"))


def _config(root: Path, **kw: Any) -> CalibrationConfig:
    return CalibrationConfig(underlying="BTC", harvest=HarvestConfig(data_root=root, end_time=END), **kw)


def _assert_same(a: Any, b: Any, path: str = "", rel: float = 1e-9) -> None:
    """Equal structure and values; floats within `rel` (summation order differs between paths)."""
    if isinstance(a, dict):
        keys = (set(a) | set(b)) - (RUN_KEYS if path == "" else set()) - PATH_KEYS
        for k in keys:
            assert k in a and k in b, f"{path}.{k} missing on one side"
            _assert_same(a[k], b[k], f"{path}.{k}", rel)
    elif isinstance(a, list):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _assert_same(x, y, f"{path}[{i}]", rel)
    elif isinstance(a, float) and isinstance(b, int | float):
        assert math.isclose(a, b, rel_tol=rel, abs_tol=rel), f"{path}: {a} != {b}"
    else:
        assert a == b, f"{path}: {a!r} != {b!r}"


def test_chunked_equals_in_memory(harvest: Path) -> None:
    config = _config(harvest)
    mem = run_historical_calibration_from_harvest(config)
    chunked = run_historical_calibration_from_harvest(config, chunk_threshold_rows=0)
    assert mem.data_quality.extra["engine_path"] == "in_memory"
    assert chunked.data_quality.extra["engine_path"] == "chunked"
    assert chunked.data_quality.extra["chunks"] == 15  # one per partition of the window
    assert chunked.data_quality.extra["fit_sample_size"] == sum(b.n_samples for b in mem.bands)
    assert mem.global_metrics.recommended_iv_multiplier is not None
    _assert_same(mem.to_dict(), chunked.to_dict())


def test_chunked_equals_in_memory_with_max_samples(harvest: Path) -> None:
    config = _config(harvest, max_samples=5_000)
    mem = run_historical_calibration_from_harvest(config).to_dict()
    chunked = run_historical_calibration_from_harvest(config, chunk_threshold_rows=0).to_dict()
    assert mem["data_quality"]["excluded"]["sampled_out"] > 0
    assert chunked["data_quality"]["passes"] == 3  # count, sample, score
    _assert_same(mem, chunked)


@pytest.mark.parametrize("scenario", ["no_index", "no_mark_iv", "truncated_file", "outage", "usd_marks"])
def test_chunked_grades_pathologies_like_in_memory(tmp_path: Path, scenario: str) -> None:
    root = _harvest(tmp_path, scenario)
    mem = run_historical_calibration_from_harvest(_config(root)).to_dict()
    chunked = run_historical_calibration_from_harvest(_config(root), chunk_threshold_rows=0).to_dict()
    assert chunked["data_quality"]["engine_path"] == "chunked"
    _assert_same(mem, chunked)


def test_bounded_fit_sample_stays_close(harvest: Path) -> None:
    config = _config(harvest)
    mem = run_historical_calibration_from_harvest(config)
    window = mem.window
    hf = find_harvest_files(harvest, "BTC", window_start=window["start"], window_end=window["end"],
                            warmup=timedelta(days=7))
    small = calibrate_chunked(hf, config, max_fit_samples=20_000)
    extra = small.data_quality.extra
    assert 10_000 <= extra["fit_sample_size"] <= 20_000 + 200  # + the newest snapshot, kept whole
    assert extra["fit_sample_stride"] > 1
    # Counts are exact; the fit sees the quotes under a hash threshold, the metrics every quote.
    assert small.n_samples == mem.n_samples
    assert small.n_snapshots == mem.n_snapshots
    assert small.data_quality.excluded == mem.data_quality.excluded
    assert [b.n_samples for b in small.bands] == [b.n_samples for b in mem.bands]
    assert small.global_metrics.rv_7d_pct == pytest.approx(mem.global_metrics.rv_7d_pct, rel=1e-12)
    assert small.global_metrics.atm_iv_pct == pytest.approx(mem.global_metrics.atm_iv_pct, rel=1e-12)
    # A keyed (random-like) sample of 1 in 8: a few 1e-3 off the full fit, as sampling error goes.
    assert small.global_metrics.recommended_iv_multiplier == pytest.approx(
        mem.global_metrics.recommended_iv_multiplier, rel=5e-3)
    for a, b in zip(small.bands, mem.bands, strict=True):
        assert a.recommended_iv_multiplier == pytest.approx(b.recommended_iv_multiplier, rel=5e-3)
    assert _close_metrics(small.global_metrics.tested, mem.global_metrics.tested)  # no fit involved
    assert small.global_metrics.at_recommended.vega_weighted_mae_pct == pytest.approx(
        mem.global_metrics.at_recommended.vega_weighted_mae_pct, rel=2e-2)
    assert small.status == mem.status


def _close_metrics(a: Any, b: Any) -> bool:
    return all(math.isclose(getattr(a, f), getattr(b, f), rel_tol=1e-9)
               for f in ("mae_pct", "mae_vol_points", "vega_weighted_mae_pct", "bias_pct"))


@pytest.mark.parametrize("layout", ["sorted", "jittered", "shuffled", "gaps"])
def test_index_series_matches_the_group_by_median(tmp_path: Path, layout: str) -> None:
    """The run-length fast path of the index read gives the plain group-by median in every layout."""
    import polars as pl

    from calib.data.layout import atomic_write_parquet
    from calib.data.reader import TS_TYPE, read_index_series

    rng = np.random.default_rng(3)
    for day in range(3):
        ts = [END - timedelta(days=3 - day) + timedelta(minutes=5 * i) for i in range(40) for _ in range(6)]
        price = np.repeat(60_000 + rng.normal(0, 50, 40).cumsum(), 6)
        if layout == "jittered":
            price = price + rng.normal(0, 1, price.size)
        if layout == "gaps":
            price[rng.random(price.size) < 0.3] = np.nan
            price[:6] = np.nan  # a snapshot without any index
        df = pl.DataFrame({"snapshot_ts": ts, "index_price": price}).with_columns(
            pl.col("snapshot_ts").dt.replace_time_zone("UTC"), pl.col("index_price").fill_nan(None))
        if layout == "shuffled":
            df = df.sample(fraction=1.0, shuffle=True, seed=day)
        df = df.with_columns(instrument_name=pl.lit("BTC-1JAN30-100000-C"), mark_price=pl.lit(0.01),
                             underlying_price=pl.col("index_price").fill_null(60_000.0))
        atomic_write_parquet(df, tmp_path / "BTC" / f"date={END - timedelta(days=3 - day):%Y-%m-%d}" / "x.parquet")
    hf = find_harvest_files(tmp_path, "BTC", window_start=END - timedelta(days=1), window_end=END,
                            warmup=timedelta(days=3))
    got = read_index_series(hf)
    want = (pl.scan_parquet(str(tmp_path / "BTC" / "**" / "*.parquet"))
            .with_columns(pl.col("snapshot_ts").cast(TS_TYPE))
            .group_by("snapshot_ts").agg(pl.col("index_price").filter(pl.col("index_price") > 0).median())
            .sort("snapshot_ts").collect())
    assert got["snapshot_ts"].to_list() == want["snapshot_ts"].to_list()
    spot = got.filter(pl.col("index_source") == "index_price")["index_usd"]
    np.testing.assert_array_equal(spot.to_numpy(), want["index_price"].drop_nulls().to_numpy())
    assert got["index_source"].is_in(["index_price", "nearest_forward"]).all()

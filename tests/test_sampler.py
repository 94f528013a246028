"""The one fit sampler (calib.stages.sampler): the same quotes in memory and chunked, whatever their order."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest

from calib.calibration import run_historical_calibration_from_harvest
from calib.config import CalibrationConfig, HarvestConfig
from calib.data.demo import DemoSpec, generate_demo_harvest
from calib.engine.model import QuoteArrays
from calib.stages.sampler import (
    HashSampler,
    bottom_k_threshold,
    level_for_cap,
    quote_hashes,
    splitmix64,
)
from tests.synth import rewrite_files

END = datetime(2025, 3, 1, tzinfo=UTC)


@pytest.fixture(scope="module")
def harvest(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("sampler")
    generate_demo_harvest(root, DemoSpec(underlyings=("BTC",), end=END, days=10, step_minutes=60,
                                         max_instruments=200))
    return root


def _config(root: Path, **kw: Any) -> CalibrationConfig:
    return CalibrationConfig(underlying="BTC", lookback_days=3.0, multiplier_tested=1.0,
                             harvest=HarvestConfig(data_root=root, end_time=END), **kw)


def _call_share(r: Any) -> float:
    n = {o.option_type: o.metrics.n_samples for o in r.option_type_metrics}
    return n["C"] / (n["C"] + n["P"])


def test_in_memory_and_chunked_pick_the_same_sample(harvest: Path) -> None:
    config = _config(harvest, max_samples=3_000)
    mem = run_historical_calibration_from_harvest(config)
    chunked = run_historical_calibration_from_harvest(config, chunk_threshold_rows=0)
    assert mem.data_quality.extra["engine_path"] == "in_memory"
    assert chunked.data_quality.extra["engine_path"] == "chunked"
    assert mem.data_quality.excluded["sampled_out"] == chunked.data_quality.excluded["sampled_out"] > 0
    assert chunked.data_quality.extra["fit_sample_size"] == sum(b.n_samples for b in mem.bands)
    assert [b.n_samples for b in mem.bands] == [b.n_samples for b in chunked.bands]
    assert chunked.global_metrics.recommended_iv_multiplier == pytest.approx(
        mem.global_metrics.recommended_iv_multiplier, rel=1e-9, abs=1e-9)


def test_sample_does_not_depend_on_row_order(harvest: Path, tmp_path: Path) -> None:
    """Rows shuffled inside every file: a keyed sample keeps the same quotes (a stride would not)."""
    config = _config(harvest, max_samples=3_000)
    before = run_historical_calibration_from_harvest(config)
    shuffled = tmp_path / "shuffled"
    shutil.copytree(harvest, shuffled)
    rewrite_files(shuffled, lambda f: f.sample(fraction=1.0, shuffle=True, seed=3))
    after = run_historical_calibration_from_harvest(_config(shuffled, max_samples=3_000))
    assert [b.n_samples for b in after.bands] == [b.n_samples for b in before.bands]
    assert [o.metrics.n_samples for o in after.option_type_metrics] == [
        o.metrics.n_samples for o in before.option_type_metrics]
    assert after.global_metrics.recommended_iv_multiplier == pytest.approx(
        before.global_metrics.recommended_iv_multiplier, rel=1e-9)


def test_sample_does_not_alias_with_call_put_order(harvest: Path, tmp_path: Path) -> None:
    """Calls and puts interleaved row by row: every other quote is all calls or all puts, as a stride of 2 took."""
    inter = tmp_path / "interleaved"
    shutil.copytree(harvest, inter)
    rewrite_files(inter, lambda f: f.sort(["snapshot_ts", "expiry_ts", "strike", "option_type"]))
    wide = {"min_dte": 0.0, "max_dte": 400.0}  # every usable quote counts in the metrics by type
    full = run_historical_calibration_from_harvest(_config(inter, **wide))
    n = full.data_quality.rows_used
    if n % 2 == 0:  # drop the newest file's last quote (a put): an odd count makes the old stride exactly 2
        newest = max((inter / "BTC").rglob("*.parquet"))
        pl.read_parquet(newest).head(-1).write_parquet(newest)
        full = run_historical_calibration_from_harvest(_config(inter, **wide))
        n = full.data_quality.rows_used
    assert n % 2 == 1 and n > 10_000
    k = (n - 1) // 2 + 1  # with n odd, an evenly spaced sample of k is every other quote
    sampled = run_historical_calibration_from_harvest(_config(inter, max_samples=k, **wide))
    assert k - 10 <= sampled.n_samples <= k
    assert abs(_call_share(sampled) - _call_share(full)) < 0.03


def _quotes(n: int, seed: int = 0) -> QuoteArrays:
    rng = np.random.default_rng(seed)
    return QuoteArrays.from_rows(k_rel=rng.uniform(0.5, 1.5, n), t_years=rng.uniform(0.001, 0.5, n),
                                 is_call=rng.random(n) < 0.5, mark_coin=np.ones(n), iv=np.ones(n), rv=np.ones(n),
                                 snapshot_us=(1_700_000_000 + rng.integers(0, 100, n) * 3600) * 1_000_000)


def test_hashes_are_fixed_numbers() -> None:
    """Stable across processes and versions: splitmix64 of 0, 1 are the published constants."""
    assert splitmix64(np.array([0, 1], dtype=np.uint64)).tolist() == [0, 0x5692161D100B05E5]
    q = _quotes(1_000)
    np.testing.assert_array_equal(quote_hashes(q), quote_hashes(q.take(np.arange(1_000))))


def test_bottom_k_keeps_exactly_k() -> None:
    h = quote_hashes(_quotes(10_000))
    assert int(np.count_nonzero(h < bottom_k_threshold(h, 700))) == 700


@pytest.mark.parametrize("chunk", [1, 7, 1000, 10_000])
def test_hash_sampler_is_deterministic_and_bounded(chunk: int) -> None:
    n, cap = 10_000, 1_000
    q = _quotes(n)
    h = quote_hashes(q)
    sampler = HashSampler(cap)
    for i in range(0, n, chunk):
        j = min(i + chunk, n)
        sampler.add(q.slice(i, j), h[i:j])
    assert sampler.level == level_for_cap(h, cap) > 0
    sample = sampler.sample()
    assert sample is not None and len(sample) <= cap
    kept = h < np.uint64(1 << (64 - sampler.level))
    np.testing.assert_array_equal(sample.k_rel, q.k_rel[kept])  # the same quotes whatever the chunking
    with pytest.raises(ValueError, match="`cap` must be positive"):
        HashSampler(0)

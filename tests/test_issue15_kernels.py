"""Issue 15, second round: each rewritten kernel against the exact previous behaviour.

The deferred mark_iv check, and the kernels rewritten for fewer array passes,
each compared with a frozen copy of the code it replaced (bit for bit, or the
same counts). The whole results stay the ones recorded in
tests/data/golden_results.json (tests/test_name_parsing.py).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import polars as pl
import pytest

from calib.config import CalibrationConfig
from calib.engine.metrics import bucket_index
from calib.numerics.black76 import black76_price_coin
from calib.stages.common import USABLE
from calib.stages.quotes import frame_arrays
from calib.stages.rv import RvLookup


def _coded_frame(n: int, seed: int, *, unknown_snapshots: bool) -> tuple[pl.DataFrame, RvLookup]:
    """A `coded_frame`-shaped frame: marks near, on and far from their own mark_iv's price."""
    rng = np.random.default_rng(seed)
    snaps = np.repeat(np.arange(1, 41, dtype=np.int64) * 300_000_000, n // 40)
    n = snaps.size
    k = np.exp(rng.normal(0.0, 0.3, n))
    t = rng.uniform(0.001, 0.5, n)
    iv = rng.uniform(0.2, 1.5, n)
    call = rng.random(n) < 0.5
    price = black76_price_coin(1.0, k, t, iv, call)
    mark = price * rng.choice([1.0, 1.0 + 1e-9, 1.02, 1.5], n)
    code = np.where(rng.random(n) < 0.2, 3, USABLE).astype(np.uint8)
    ts = snaps[::n // 40].copy()
    rv = np.full(ts.size, 0.5)
    if unknown_snapshots:
        rv[::7] = np.nan  # rows at these snapshots have no RV: moved in place after the check
    lookup = RvLookup(ts_us=ts, rv=rv, span_days=np.full(ts.size, 7.0))
    frame = pl.DataFrame({"snapshot_us": snaps, "reason_code": code, "k_rel": k, "t_years": t, "is_call": call,
                          "mark_price": mark, "mark_iv": iv * 100.0})
    return frame, lookup


@pytest.mark.parametrize("unknown_snapshots", [False, True], ids=["all_rv", "rows_without_rv"])
def test_deferred_mark_iv_check_gives_the_same_tally_and_rows(unknown_snapshots: bool) -> None:
    cfg = CalibrationConfig(underlying="BTC")
    frame, lookup = _coded_frame(40_000, 5, unknown_snapshots=unknown_snapshots)
    want_tally, want = frame_arrays(frame, lookup, cfg, has_mark_iv=True)
    with ThreadPoolExecutor(max_workers=1) as pool:
        tally, got = frame_arrays(frame, lookup, cfg, has_mark_iv=True, pool=pool)
        tally.settle()
    assert 0 < want_tally.iv_mismatch < want_tally.iv_checked
    assert (tally.iv_mismatch, tally.iv_checked, tally.excluded) == (
        want_tally.iv_mismatch, want_tally.iv_checked, want_tally.excluded)
    assert ("no_rv" in tally.excluded) == unknown_snapshots
    for f in ("k_rel", "t_years", "is_call", "mark_coin", "iv", "snap"):
        assert np.array_equal(getattr(got, f), getattr(want, f)), f


@pytest.mark.parametrize("n_edges", [1, 4, 6, 16, 17, 40])
def test_bucket_index_is_searchsorted_right_with_ties_nan_and_infinities(n_edges: int) -> None:
    rng = np.random.default_rng(n_edges)
    edges = np.sort(rng.normal(0.0, 1.0, n_edges))
    values = np.concatenate([rng.normal(0.0, 1.5, 5_000), edges, np.nextafter(edges, -np.inf),
                             np.nextafter(edges, np.inf), [np.nan, np.inf, -np.inf, 0.0, -0.0]])
    got = bucket_index(edges, values)
    assert np.array_equal(got, np.searchsorted(edges, values, side="right"))


def test_chunked_iteration_with_deferred_checks_yields_each_chunk_settled(monkeypatch: pytest.MonkeyPatch) -> None:
    import calib.stages.quotes as quotes

    cfg = CalibrationConfig(underlying="BTC")
    frames = [_coded_frame(8_000, seed, unknown_snapshots=seed == 8) for seed in (6, 7, 8)]
    monkeypatch.setattr(quotes, "iter_coded_frames", lambda *a, **k: iter(frames))
    got = list(quotes.iter_chunk_arrays([], frames[0][1], cfg, has_mark_iv=True))
    assert len(got) == len(frames)
    for (tally, arrays), (frame, lookup) in zip(got, frames, strict=True):
        want_tally, want = frame_arrays(frame, lookup, cfg, has_mark_iv=True)
        assert not tally.mismatch_jobs
        assert (tally.iv_mismatch, tally.excluded) == (want_tally.iv_mismatch, want_tally.excluded)
        assert np.array_equal(arrays.mark_coin, want.mark_coin)

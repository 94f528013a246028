"""Issue 15, second round: each rewritten kernel against the exact previous behaviour.

The deferred mark_iv check, and the kernels rewritten for fewer array passes,
each compared with a frozen copy of the code it replaced (bit for bit, or the
same counts). The whole results stay the ones recorded in
tests/data/golden_results.json (tests/test_name_parsing.py).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from itertools import pairwise

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


def _frozen_reason_codes(rules: list[tuple[str, pl.Expr]], codes: dict[str, int], usable: int) -> pl.Expr:
    """`row_reason_code_expr`'s combination before issue 15's second round: rank-packed minimum."""
    ranked = [pl.when(cond.fill_null(False)).then(pl.lit((rank << 4) | codes[reason], dtype=pl.UInt8))
              .otherwise(pl.lit(255, dtype=pl.UInt8)) for rank, (reason, cond) in enumerate(rules)]
    first = pl.min_horizontal(ranked)
    return pl.when(first == 255).then(pl.lit(usable, dtype=pl.UInt8)).otherwise(first & 15).alias("reason_code")


def _messy_quotes(n: int, seed: int) -> pl.DataFrame:
    """Rows that trip every rule, several at once, with nulls and NaNs in every column a rule reads."""
    rng = np.random.default_rng(seed)

    def pick(values: np.ndarray, p_null: float = 0.03) -> list[object]:
        out: list[object] = values.tolist()
        for i in np.flatnonzero(rng.random(n) < p_null):
            out[i] = None
        return out

    def num(lo: float, hi: float, p_nan: float = 0.03, p_neg: float = 0.03) -> list[object]:
        v = rng.uniform(lo, hi, n)
        v[rng.random(n) < p_nan] = np.nan
        v[rng.random(n) < p_neg] *= -1
        v[rng.random(n) < 0.03] = 0.0
        return pick(v)

    t_years = rng.uniform(-0.01, 0.6, n)
    t_years[rng.random(n) < 0.05] = 0.0
    expiry = pick(np.full(n, 1_750_000_000_000_000, dtype=np.int64))
    return pl.DataFrame({
        "mark_price": num(0.0, 0.3), "underlying_price": num(50_000, 120_000), "strike": num(20_000, 200_000),
        "expiry_ts": expiry, "option_type": pick(rng.choice(["C", "P", "X"], n)), "mark_iv": num(1.0, 600.0),
        "bid_price": num(0.0, 0.3), "ask_price": num(0.0, 0.3), "t_years": pick(t_years),
        "dte_days": pick(t_years * 365.0 * rng.choice([1.0, 1.0, 3.0], n)), "intrinsic_coin": num(0.0, 0.2),
    }, schema_overrides={"expiry_ts": pl.Int64}).with_columns(
        pl.col("expiry_ts").cast(pl.Datetime("us", "UTC")),
        (pl.col("option_type") == "C").fill_null(False).alias("is_call"))


@pytest.mark.parametrize(("has_mark_iv", "types"), [(True, ("C", "P")), (False, ("C", "P")), (True, ("P",))])
def test_reason_code_chain_is_the_frozen_rank_minimum(has_mark_iv: bool, types: tuple[str, ...]) -> None:
    from calib.data.quality import _rules, row_reason_code_expr
    from calib.stages.common import REASON_CODES

    cfg = CalibrationConfig(underlying="BTC")
    kw = {"has_mark_iv": has_mark_iv, "option_types": types, "dte_max_read": 180.0,
          "min_tick_coin": cfg.min_tick_coin, "th": cfg.quality}
    frame = _messy_quotes(20_000, 9)
    got = frame.select(row_reason_code_expr(**kw, codes=REASON_CODES, usable=USABLE))["reason_code"]
    want = frame.select(_frozen_reason_codes(_rules(**kw), REASON_CODES, USABLE))["reason_code"]
    assert got.dtype == pl.UInt8
    assert got.equals(want)
    counts = want.value_counts()
    assert counts.height >= len(_rules(**kw))  # every rule names some rows, and some rows are usable


def test_window_arrays_settles_every_deferred_count(monkeypatch: pytest.MonkeyPatch) -> None:
    import calib.stages.quotes as quotes

    cfg = CalibrationConfig(underlying="BTC")
    frames = [_coded_frame(8_000, seed, unknown_snapshots=seed == 11) for seed in (10, 11, 12)]
    monkeypatch.setattr(quotes, "iter_coded_frames", lambda *a, **k: iter(frames))
    tally, arrays = quotes.window_arrays([], frames[0][1], cfg, has_mark_iv=True, capacity=1_000)  # grows
    wants = [frame_arrays(f, lk, cfg, has_mark_iv=True) for f, lk in frames]
    assert not tally.mismatch_jobs
    assert tally.iv_mismatch == sum(t.iv_mismatch for t, _ in wants) > 0
    assert tally.iv_checked == sum(t.iv_checked for t, _ in wants)
    assert np.array_equal(arrays.iv, np.concatenate([a.iv for _, a in wants]))


def _frozen_tally_parts(frame: pl.DataFrame, lookup: RvLookup) -> tuple[object, ...]:
    """What frame_arrays took from whole columns before issue 15's second round (`to_numpy` of each)."""
    from calib.numerics.stats import distinct, median
    from calib.stages.common import ROW_REASONS, UNIT_CHECK_SAMPLE

    codes = frame["reason_code"].to_numpy()
    counts = np.bincount(codes, minlength=USABLE + 1)
    excluded = {ROW_REASONS[i]: int(n) for i, n in enumerate(counts[:len(ROW_REASONS)]) if n}
    medians = []
    for name in ("mark_price", "mark_iv"):
        values = frame[name].to_numpy()
        sample = values[::-(-values.size // UNIT_CHECK_SAMPLE)] if values.size else values
        with np.errstate(invalid="ignore"):
            n_pos = int(np.count_nonzero(values > 0))
            sample = sample[sample > 0]
        medians.append([(median(sample), n_pos)] if n_pos and sample.size else [])
    snap_all = frame["snapshot_us"].to_numpy()
    rows = np.flatnonzero(codes == USABLE)
    return excluded, medians, distinct(snap_all), lookup.find(snap_all)[rows]


@pytest.mark.parametrize("layout", ["one_chunk", "aligned_chunks", "columns_chunked_apart"])
def test_tally_from_chunks_is_the_whole_column_one(layout: str) -> None:
    cfg = CalibrationConfig(underlying="BTC")
    frame, lookup = _coded_frame(40_000, 13, unknown_snapshots=True)
    frame = frame.with_columns(pl.when(pl.int_range(pl.len()) % 97 == 0).then(-1.0).otherwise(pl.col("mark_price"))
                               .alias("mark_price"))
    if layout != "one_chunk":
        cuts = [0, 7_001, 19_999, 33_333, frame.height]
        frame = pl.concat([frame[a:b] for a, b in pairwise(cuts)], rechunk=False)
    if layout == "columns_chunked_apart":  # chunk boundaries that differ between columns
        def split(name: str, at: int) -> pl.Series:
            return pl.concat([frame[name][:at], frame[name][at:]], rechunk=False)

        frame = frame.with_columns(frame["mark_iv"].rechunk(), split("snapshot_us", 12_345), split("mark_price", 3_001))
        assert len({frame[c].n_chunks() for c in ("mark_iv", "snapshot_us", "reason_code")}) == 3
    excluded, medians, snaps, snap_idx = _frozen_tally_parts(frame, lookup)
    tally, arrays = frame_arrays(frame, lookup, cfg, has_mark_iv=True)
    assert {k: v for k, v in tally.excluded.items() if k != "no_rv"} == excluded
    assert [tally.mark_medians, tally.iv_medians] == medians
    assert np.array_equal(tally.snapshots_us[0], snaps)
    assert np.array_equal(arrays.snap, snap_idx[snap_idx >= 0])

"""Issue 15 speed work: each rewritten kernel against a frozen copy of the code it replaced (bit for bit or exact counts).

The whole results are held to the values recorded before the speed work by
tests/test_name_parsing.py (tests/data/golden_results.json, 1e-9 relative).
"""

from __future__ import annotations

import numpy as np
import pytest

from calib.config import CalibrationConfig
from calib.engine.metrics import ErrorMapSums, MetricSums, QuoteErrors
from calib.numerics.black76 import black76_price_coin
from calib.stages import mark_iv_mismatches
from calib.stages.quotes import _unit_forward_price


def _frozen_mark_iv_mismatches(mark_coin: np.ndarray, k_rel: np.ndarray, t_years: np.ndarray, iv: np.ndarray,
                               is_call: np.ndarray, config: CalibrationConfig) -> int:
    """The check as it was before issue 15 (one block: the blocks never changed the count)."""
    q = config.quality
    with np.errstate(invalid="ignore"):
        model = black76_price_coin(1.0, k_rel, t_years, iv, is_call)
        tol = np.maximum(q.mark_iv_tolerance_ticks * config.min_tick_coin, q.mark_iv_tolerance_pct / 100 * mark_coin)
        return int(np.count_nonzero(np.abs(model - mark_coin) > tol))


def _quotes(n: int, seed: int) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(seed)
    k = np.exp(rng.normal(0.0, 0.3, n))
    t = rng.uniform(0.0, 0.5, n)
    t[:50] = 0.0  # expired: intrinsic
    iv = rng.uniform(0.05, 2.0, n)
    iv[50:80] = np.nan
    iv[80:100] = 0.0
    call = rng.random(n) < 0.5
    return k, t, iv, call


def test_unit_forward_price_is_the_kernel_bit_for_bit() -> None:
    k, t, iv, call = _quotes(200_000, 1)
    want = black76_price_coin(1.0, k, t, iv, call)
    got = _unit_forward_price(k, t, iv, call)
    assert np.array_equal(got, want, equal_nan=True)


@pytest.mark.parametrize("seed", [2, 3])
def test_mark_iv_mismatch_count_is_the_frozen_one_also_at_the_tolerance_edge(seed: int) -> None:
    cfg = CalibrationConfig(underlying="BTC")
    q = cfg.quality
    k, t, iv, call = _quotes(300_000, seed)
    model = black76_price_coin(1.0, k, t, iv, call)
    rng = np.random.default_rng(seed + 10)
    tol = np.maximum(q.mark_iv_tolerance_ticks * cfg.min_tick_coin, q.mark_iv_tolerance_pct / 100 * model)
    # Marks off by about the tolerance (either side, by a few ulp), by far more, or exact.
    scale = rng.choice([0.0, 1.0 - 1e-15, 1.0, 1.0 + 1e-15, 3.0], model.size)
    mark = model + np.where(rng.random(model.size) < 0.5, -1.0, 1.0) * scale * tol
    mark[100:120] = np.nan
    want = _frozen_mark_iv_mismatches(mark, k, t, iv, call, cfg)
    assert 0 < want < mark.size
    assert mark_iv_mismatches(mark, k, t, iv, call, cfg) == want


def _frozen_error_map_add(m: ErrorMapSums, errors: QuoteErrors, dte_days: np.ndarray, z: np.ndarray) -> None:
    """`ErrorMapSums.add` as it was before issue 15."""
    nd, nz = m.shape
    di = np.searchsorted(m.dte_edges, dte_days, side="right") - 1
    di[dte_days == m.dte_edges[-1]] = nd - 1
    zi = np.searchsorted(m.z_edges[1:-1], z, side="right")
    ok = (di >= 0) & (di < nd)
    cell = di * nz + zi
    ev, ep = errors.err_vol_points, errors.err_pct
    if not ok.all():
        cell, ev, ep = cell[ok], ev[ok], ep[ok]
    size = nd * nz
    m.n += np.bincount(cell, minlength=size)
    m.err_vol += np.bincount(cell, weights=ev, minlength=size)
    m.abs_vol += np.bincount(cell, weights=np.abs(ev), minlength=size)
    m.err_pct += np.bincount(cell, weights=ep, minlength=size)
    m.abs_pct += np.bincount(cell, weights=np.abs(ep), minlength=size)


@pytest.mark.parametrize("beyond", [False, True], ids=["inside", "beyond_edges"])
def test_error_map_with_shared_rows_and_abs_errors_is_the_frozen_one(beyond: bool) -> None:
    rng = np.random.default_rng(4)
    n = 50_000
    dte = rng.uniform(0.0, 200.0 if beyond else 180.0, n)
    dte[:10] = 180.0
    z = rng.normal(0.0, 1.5, n)
    errors = QuoteErrors(sigma=np.zeros(n), err_pct=rng.normal(0.0, 5.0, n), err_vol_points=rng.normal(0.0, 2.0, n))
    edges = ([0.0, 3.0, 10.0, 45.0, 180.0], [-np.inf, -1.0, 0.0, 1.0, np.inf])
    want, got, got_plain = (ErrorMapSums.zeros(*edges) for _ in range(3))
    _frozen_error_map_add(want, errors, dte, z)
    sums = MetricSums.zeros()
    abs_errors = sums.add(errors, np.ones(n))
    got.add(errors, dte, z, rows=got.dte_rows(dte), abs_errors=abs_errors)
    got_plain.add(errors, dte, z)
    for m in (got, got_plain):
        for name in ("n", "err_vol", "abs_vol", "err_pct", "abs_pct"):
            assert np.array_equal(getattr(m, name), getattr(want, name)), name

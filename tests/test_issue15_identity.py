"""Issue 15 speed work: each rewritten kernel against a frozen copy of the code it replaced (bit for bit or exact counts).

The whole results are held to the values recorded before the speed work by
tests/test_name_parsing.py (tests/data/golden_results.json, 1e-9 relative).
"""

from __future__ import annotations

import numpy as np
import pytest

from calib.config import CalibrationConfig
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

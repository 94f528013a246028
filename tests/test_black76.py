"""Black-76 coin kernels against closed forms, parity and shape properties."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import norm

from calib.numerics.black76 import black76_price_coin, black76_vega_coin, intrinsic_coin

fwd = st.floats(1_000, 200_000)
log_k = st.floats(-1.5, 1.5)
t_years = st.floats(1 / 365 / 24, 2.0)
sigma = st.floats(0.05, 3.0)


def test_atm_call_closed_form() -> None:
    # At the money: c = 2 N(s/2) - 1 in coin, s = sigma sqrt(T).
    f, t, v = 60_000.0, 30 / 365, 0.6
    s = v * np.sqrt(t)
    expected = 2 * norm.cdf(s / 2) - 1
    assert black76_price_coin(f, f, t, v, True) == pytest.approx(expected, rel=1e-14)
    assert black76_price_coin(f, f, t, v, False) == pytest.approx(expected, rel=1e-14)


def test_textbook_usd_value() -> None:
    # F = K = 20, T = 4/12, sigma = 0.25, r = 0: 20 (2 N(0.0721688) - 1) = 1.150648 USD.
    f, k, t, v = 20.0, 20.0, 4 / 12, 0.25
    d1 = (np.log(f / k) + 0.5 * v * v * t) / (v * np.sqrt(t))
    d2 = d1 - v * np.sqrt(t)
    usd = f * norm.cdf(d1) - k * norm.cdf(d2)
    assert black76_price_coin(f, k, t, v, True) * f == pytest.approx(usd, rel=1e-13)
    assert usd == pytest.approx(1.150648, abs=1e-6)


@given(fwd, log_k, t_years, sigma)
@settings(max_examples=300, deadline=None)
def test_put_call_parity_in_coin(f: float, lk: float, t: float, v: float) -> None:
    k = f * np.exp(lk)
    c = black76_price_coin(f, k, t, v, True)
    p = black76_price_coin(f, k, t, v, False)
    assert c - p == pytest.approx(1.0 - k / f, abs=1e-12)


@given(fwd, t_years, sigma)
@settings(max_examples=100, deadline=None)
def test_call_decreasing_and_convex_in_strike(f: float, t: float, v: float) -> None:
    k = f * np.exp(np.linspace(-1.0, 1.0, 41))
    c_usd = black76_price_coin(f, k, t, v, True) * f
    assert np.all(np.diff(c_usd) <= 1e-9 * f)
    slopes = np.diff(c_usd) / np.diff(k)
    assert np.all(np.diff(slopes) >= -1e-9)


@given(fwd, log_k, t_years, sigma)
@settings(max_examples=200, deadline=None)
def test_vega_matches_finite_difference(f: float, lk: float, t: float, v: float) -> None:
    k = f * np.exp(lk)
    h = 1e-6
    fd = (black76_price_coin(f, k, t, v + h, True) - black76_price_coin(f, k, t, v - h, True)) / (2 * h)
    assert black76_vega_coin(f, k, t, v) == pytest.approx(fd, rel=1e-5, abs=1e-8)


def test_expired_and_zero_vol_give_intrinsic() -> None:
    f = np.array([100.0, 100.0, 100.0, 100.0])
    k = np.array([90.0, 110.0, 90.0, 110.0])
    calls = np.array([True, True, False, False])
    assert np.allclose(black76_price_coin(f, k, 0.0, 0.5, calls), intrinsic_coin(f, k, calls))
    assert np.allclose(black76_price_coin(f, k, 0.5, 0.0, calls), intrinsic_coin(f, k, calls))
    assert np.all(black76_vega_coin(f, k, 0.0, 0.5) == 0.0)


def test_vectorized_equals_scalar() -> None:
    rng = np.random.default_rng(3)
    f = rng.uniform(1e3, 1e5, 50)
    k = f * np.exp(rng.uniform(-1, 1, 50))
    t = rng.uniform(0.01, 1, 50)
    v = rng.uniform(0.1, 2, 50)
    c = rng.random(50) < 0.5
    vec = black76_price_coin(f, k, t, v, c)
    one = [black76_price_coin(f[i], k[i], t[i], v[i], c[i]) for i in range(50)]
    assert np.allclose(vec, one, rtol=0, atol=0)


def test_engine_kernels_match_the_public_ones() -> None:
    """The engine prices and weights with the precomputed-input kernels: same values to 1e-12."""
    from calib.engine.model import QuoteArrays, model_inputs, model_sigma_price
    from calib.numerics.black76 import (
        black76_price_coin_at_total_vol,
        black76_vega_coin_at_log_moneyness,
    )

    rng = np.random.default_rng(3)
    n = 20_000
    k_rel = np.exp(rng.uniform(-1.0, 1.0, n))
    t = rng.uniform(1 / 365, 1.0, n)
    sig = rng.uniform(0.05, 2.5, n)
    is_call = rng.random(n) < 0.5
    x, omega = np.log(k_rel), np.where(is_call, 1.0, -1.0)
    want_price = black76_price_coin(1.0, k_rel, t, sig, is_call)
    want_vega = black76_vega_coin(1.0, k_rel, t, sig)
    got_price = black76_price_coin_at_total_vol(x, k_rel, omega, sig * np.sqrt(t))
    np.testing.assert_allclose(got_price, want_price, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(black76_vega_coin_at_log_moneyness(x, sig, np.sqrt(t)), want_vega,
                               rtol=1e-12, atol=1e-12)
    # zero total vol: intrinsic, as the public kernel
    zero = black76_price_coin_at_total_vol(x[:4], k_rel[:4], omega[:4], np.zeros(4))
    np.testing.assert_array_equal(zero, intrinsic_coin(1.0, k_rel[:4], is_call[:4]))

    # and the engine's model pricing is that kernel (flat skew: sigma = RV m)
    rv = rng.uniform(0.2, 1.2, n)
    q = QuoteArrays.from_rows(k_rel=k_rel, t_years=t, is_call=is_call, mark_coin=want_price, iv=sig,
                              rv=rv, snapshot_us=np.arange(n, dtype=np.int64))
    mi = model_inputs(q)
    sigma_model, price = model_sigma_price(mi, 1.3, np.array([-1.0, 0.0, 1.0]), np.ones(3))
    np.testing.assert_allclose(sigma_model, rv * 1.3, rtol=1e-15)
    np.testing.assert_allclose(price, black76_price_coin(1.0, k_rel, t, rv * 1.3, is_call),
                               rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(mi.vega_coin, black76_vega_coin(1.0, k_rel, t, sig), rtol=1e-12, atol=1e-12)

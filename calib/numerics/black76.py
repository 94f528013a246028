"""Black-76 on the forward in Deribit's coin units (r = 0).

All kernels take broadcastable float64 arrays in the same argument order
``(forward_usd, strike_usd, t_years, sigma, is_call)`` and never loop.
"""

from __future__ import annotations

import numpy as np

from calib._typing import BoolArray, FloatArray
from calib.numerics.normal import norm_cdf

_INV_SQRT_2PI = 1.0 / np.sqrt(2.0 * np.pi)


def _d1_d2(
    forward_usd: FloatArray, strike_usd: FloatArray, t_years: FloatArray, sigma: FloatArray
) -> tuple[FloatArray, FloatArray, FloatArray]:
    total_vol = sigma * np.sqrt(t_years)
    d1 = (np.log(forward_usd / strike_usd) + 0.5 * total_vol * total_vol) / total_vol
    return d1, d1 - total_vol, total_vol


def black76_price_coin(
    forward_usd: FloatArray | float,
    strike_usd: FloatArray | float,
    t_years: FloatArray | float,
    sigma: FloatArray | float,
    is_call: BoolArray | bool,
) -> FloatArray:
    """Black-76 option price in coin units (USD price divided by the forward).

    Parameters
    ----------
    forward_usd : Deribit ``underlying_price`` of the expiry, USD.
    strike_usd : strike, USD.
    t_years : time to expiry in years of 365 days.
    sigma : annualized volatility as a fraction (0.5 = 50%).
    is_call : True for calls, False for puts.

    Notes
    -----
    Black (1976) with zero rates, divided by F::

        c = N(d1) - k N(d2),   p = k N(-d2) - N(-d1),   k = K / F,
        d1 = (ln(F/K) + s^2/2) / s,  d2 = d1 - s,  s = sigma sqrt(T).

    Where ``s <= 0`` (expired or zero vol) the price is the intrinsic value.
    """
    f, k, t, v, c = np.broadcast_arrays(
        np.asarray(forward_usd, dtype=np.float64),
        np.asarray(strike_usd, dtype=np.float64),
        np.asarray(t_years, dtype=np.float64),
        np.asarray(sigma, dtype=np.float64),
        np.asarray(is_call, dtype=bool),
    )
    k_rel = k / f
    omega = np.where(c, 1.0, -1.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        d1, d2, total_vol = _d1_d2(f, k, t, v)
        # One formula for both types (two CDFs, not four): w (N(w d1) - k N(w d2)), w = +1 call, -1 put.
        price = omega * (norm_cdf(omega * d1) - k_rel * norm_cdf(omega * d2))
    intrinsic = np.maximum(omega * (1.0 - k_rel), 0.0)
    return np.asarray(np.where(total_vol > 0, np.maximum(price, 0.0), intrinsic), dtype=np.float64)


def black76_vega_coin(
    forward_usd: FloatArray | float,
    strike_usd: FloatArray | float,
    t_years: FloatArray | float,
    sigma: FloatArray | float,
) -> FloatArray:
    """Black-76 vega in coin per unit of volatility (per 1.00, not per vol point).

    Notes
    -----
    ``dc/dsigma = phi(d1) sqrt(T)`` for calls and puts alike. Deribit's
    published ``vega`` is USD per vol point: ``F * phi(d1) sqrt(T) / 100``.
    Zero where ``sigma sqrt(T) <= 0``.
    """
    f, k, t, v = np.broadcast_arrays(
        np.asarray(forward_usd, dtype=np.float64),
        np.asarray(strike_usd, dtype=np.float64),
        np.asarray(t_years, dtype=np.float64),
        np.asarray(sigma, dtype=np.float64),
    )
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        d1, _, total_vol = _d1_d2(f, k, t, v)
        vega = _INV_SQRT_2PI * np.exp(-0.5 * d1 * d1) * np.sqrt(t)
    return np.asarray(np.where(total_vol > 0, vega, 0.0), dtype=np.float64)


# The engine's hot path: the same Black-76 from inputs precomputed once per window (ln(K/F), K/F,
# the call/put sign, total vol), in place, so a fit's many evaluations repeat no log or division
# by T. tests/test_black76.py checks them against the kernels above to 1e-12.


def black76_price_coin_at_total_vol(
    x: FloatArray, k_rel: FloatArray, omega: FloatArray, total_vol: FloatArray
) -> FloatArray:
    """Coin price ``w (N(w d1) - k N(w d2))``, ``d1 = -x / v + v / 2``, ``d2 = d1 - v``.

    ``x = ln(K/F)``, ``k = K/F``, ``w`` +1.0 call / -1.0 put, ``v = sigma sqrt(T)``;
    intrinsic where ``v <= 0``.
    """
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        d1 = -x / total_vol
        d1 += 0.5 * total_vol
        d2 = d1 - total_vol
        d1 *= omega
        d2 *= omega
        price = norm_cdf(d1)
        price -= k_rel * norm_cdf(d2)
        price *= omega
    np.maximum(price, 0.0, out=price)
    if not (total_vol > 0).all():  # zero vol: intrinsic (never for engine quotes, which have RV > 0)
        price = np.where(total_vol > 0, price, np.maximum(omega * (1.0 - k_rel), 0.0))
    return price


def black76_vega_coin_at_log_moneyness(x: FloatArray, sigma: FloatArray, sqrt_t: FloatArray) -> FloatArray:
    """Vega ``phi(d1) sqrt(T)`` per 1.00 vol, ``d1 = -x / v + v / 2``, ``v = sigma sqrt(T) > 0``."""
    v = sigma * sqrt_t
    d1 = -x / v
    d1 += 0.5 * v
    d1 *= d1
    d1 *= -0.5
    vega = np.exp(d1)
    vega *= sqrt_t
    vega *= _INV_SQRT_2PI
    return np.asarray(vega, dtype=np.float64)


def intrinsic_coin(
    forward_usd: FloatArray | float, strike_usd: FloatArray | float, is_call: BoolArray | bool
) -> FloatArray:
    """Intrinsic value in coin: max(F-K, 0)/F for calls, max(K-F, 0)/F for puts."""
    k_rel = np.asarray(strike_usd, dtype=np.float64) / np.asarray(forward_usd, dtype=np.float64)
    return np.asarray(
        np.where(is_call, np.maximum(1.0 - k_rel, 0.0), np.maximum(k_rel - 1.0, 0.0)),
        dtype=np.float64,
    )

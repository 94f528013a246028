"""Vectorized Black-76 implied volatility from coin prices.

Every quote is mapped to an out-of-the-money call on a normalized forward
(put-call parity, then the symmetry ``P(k, s) = k C(1/k, s)``), and the total
volatility ``s = sigma sqrt(T)`` is found by Newton steps on the *log* price,
kept inside a shrinking bracket with bisection as the fallback. Log-price
Newton is what makes deep out-of-the-money quotes converge: the raw price is
flat there and plain Newton crawls or overshoots. Only unconverged quotes are
iterated (the active set shrinks), so cost follows the hard quotes only.
"""

from __future__ import annotations

import numpy as np

from calib._typing import BoolArray, FloatArray
from calib.numerics.normal import norm_cdf

_INV_SQRT_2PI = 1.0 / np.sqrt(2.0 * np.pi)
MAX_TOTAL_VOL = 12.0  # sigma sqrt(T) above this is not a price anyone quotes
_MAX_ITER = 60

# Reason codes for quotes that have no implied vol.
IV_OK = 0
IV_BELOW_INTRINSIC = 1
IV_ABOVE_MAX = 2
IV_NO_CONVERGE = 3
IV_BAD_INPUT = 4
IV_REASONS = {
    IV_BELOW_INTRINSIC: "below_intrinsic",
    IV_ABOVE_MAX: "above_max_price",
    IV_NO_CONVERGE: "no_converge",
    IV_BAD_INPUT: "bad_input",
}


def _otm_call(x: FloatArray, s: FloatArray) -> tuple[FloatArray, FloatArray]:
    """Normalized OTM call price C(x, s) = N(d1) - e^x N(d2) (x = ln(K/F) >= 0) and dC/ds."""
    d1 = -x / s + 0.5 * s
    d2 = d1 - s
    price = norm_cdf(d1) - np.exp(x) * norm_cdf(d2)
    vega = _INV_SQRT_2PI * np.exp(-0.5 * d1 * d1)
    return price, vega


def implied_vol(
    price_coin: FloatArray | float,
    forward_usd: FloatArray | float,
    strike_usd: FloatArray | float,
    t_years: FloatArray | float,
    is_call: BoolArray | bool,
    *,
    tol: float = 1e-12,
) -> tuple[FloatArray, np.ndarray]:
    """Invert Black-76 coin prices into annualized implied volatility (fraction).

    Parameters
    ----------
    price_coin : option price in coin units (Deribit ``mark_price``).
    forward_usd, strike_usd : forward and strike, USD.
    t_years : time to expiry, years of 365 days.
    is_call : True for calls.
    tol : convergence tolerance on the total volatility ``sigma sqrt(T)``.

    Returns
    -------
    iv : implied volatility as a fraction, NaN where there is none.
    reason : int8 codes (``IV_OK``, ``IV_BELOW_INTRINSIC``, ``IV_ABOVE_MAX``,
        ``IV_NO_CONVERGE``, ``IV_BAD_INPUT``); see ``IV_REASONS``.

    Notes
    -----
    Safeguarded Newton on ``ln C(s) - ln q`` in the spirit of Jaeckel (2015),
    "Let's be rational": the normalized call is convex in ``s`` below
    ``sqrt(2x)`` and concave above, and in log space Newton from the
    inflection point converges in a handful of steps for any moneyness.
    """
    p, f, k, t, c = np.broadcast_arrays(
        np.asarray(price_coin, dtype=np.float64),
        np.asarray(forward_usd, dtype=np.float64),
        np.asarray(strike_usd, dtype=np.float64),
        np.asarray(t_years, dtype=np.float64),
        np.asarray(is_call, dtype=bool),
    )
    shape = p.shape
    p, f, k, t, c = (a.ravel() for a in (p, f, k, t, c))
    n = p.size
    iv = np.full(n, np.nan)
    reason = np.full(n, IV_OK, dtype=np.int8)

    with np.errstate(divide="ignore", invalid="ignore"):
        bad = ~(np.isfinite(p) & np.isfinite(f) & np.isfinite(k) & np.isfinite(t)) | (f <= 0) | (k <= 0) | (t <= 0)
        k_rel = k / f
        # Out-of-the-money part of the price (parity with r = 0, coin units).
        otm_price = np.where(c, p - np.maximum(1.0 - k_rel, 0.0), p - np.maximum(k_rel - 1.0, 0.0))
        x = np.log(k_rel)
        # OTM call at x >= 0: calls with K >= F as they are; puts map via P(k) = k C(1/k).
        use_put_side = x < 0
        q = np.where(use_put_side, otm_price / k_rel, otm_price)
        x = np.abs(x)
    reason[bad] = IV_BAD_INPUT
    below = ~bad & ~(q > 0)
    reason[below] = IV_BELOW_INTRINSIC
    above = ~bad & ~below & (q >= 1.0)
    reason[above] = IV_ABOVE_MAX

    active = np.flatnonzero(reason == IV_OK)
    xa, qa = x[active], q[active]
    with np.errstate(divide="ignore", invalid="ignore", over="ignore", under="ignore"):
        hi_price, _ = _otm_call(xa, np.full_like(xa, MAX_TOTAL_VOL))
        too_high = qa >= hi_price
        reason[active[too_high]] = IV_ABOVE_MAX
        keep = ~too_high
        active, xa, qa = active[keep], xa[keep], qa[keep]

        lo = np.zeros_like(xa)
        hi = np.full_like(xa, MAX_TOTAL_VOL)
        # Start at the inflection point s_c = sqrt(2x): C is convex below it and
        # concave above. Above it Newton on the price converges monotonically from
        # s_c; below it Newton on the log price does.
        s_c = np.sqrt(2.0 * xa)
        price_c, _ = _otm_call(xa, np.maximum(s_c, 1e-300))
        upper = qa >= price_c
        s = np.where(xa < 1e-12, np.sqrt(2.0 * np.pi) * qa, s_c)  # Brenner-Subrahmanyam at the money
        s = np.clip(s, 1e-8, MAX_TOTAL_VOL * 0.999)
        log_q = np.log(qa)
        result = np.full(active.size, np.nan)
        idx = np.arange(active.size)
        for _ in range(_MAX_ITER):
            price, vega = _otm_call(xa, s)
            above_root = price > qa
            hi = np.where(above_root, s, hi)
            lo = np.where(above_root, lo, s)
            step = np.where(upper, (price - qa) / vega, (np.log(price) - log_q) * price / vega)
            s_new = s - step
            # Newton converges quadratically: a relative step below sqrt(tol) leaves a relative
            # error ~ step^2; relative, because short-dated quotes have tiny total vols s.
            done = (np.abs(step) <= np.sqrt(tol) * s) | (hi - lo <= tol * s)
            outside = ~done & (~np.isfinite(s_new) | (s_new <= lo) | (s_new >= hi))
            s_new = np.where(outside, 0.5 * (lo + hi), s_new)
            if done.any():
                result[idx[done]] = s_new[done]
                keep = ~done
                xa, qa, log_q, s_new, lo, hi, idx, upper = (
                    a[keep] for a in (xa, qa, log_q, s_new, lo, hi, idx, upper)
                )
            s = s_new
            if s.size == 0:
                break
        reason[active[idx]] = IV_NO_CONVERGE
        iv[active] = result / np.sqrt(t[active])
    return iv.reshape(shape), reason.reshape(shape)

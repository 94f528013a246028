"""The simulated market: index paths with clustered stochastic volatility and jumps, the scenarios' regimes, the true multiplier."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from calib._typing import UNDERLYINGS, FloatArray
from calib.config import DAYS_PER_YEAR
from calib.data.demo.spec import (
    DRIFT_FROM,
    DRIFT_TO,
    FLAT_MULTIPLIER,
    FREEZE_FACTOR,
    FREEZE_LEAD_DAYS,
    MS_PER_DAY,
    MS_PER_YEAR,
    TRUTH_SCENARIOS,
    VOL_SHOCK_FACTOR,
    VOL_SHOCK_LEAD_DAYS,
)
from calib.errors import InvalidInputError
from calib.numerics.realized_vol import trailing_realized_vol


@dataclass(frozen=True, slots=True)
class _Params:
    spot0_usd: tuple[float, float]  # range of the starting index level
    vol_level: float  # long-run annualized vol (fraction)
    jump_scale: float
    strike_fracs: tuple[float, ...]  # strike step / spot for grid levels 0..4
    skew_slope: float  # ratio^2 = 1 + slope z + curv z^2
    skew_curv: float
    oi_scale: float  # contracts


PARAMS = {
    "BTC": _Params((65e3, 90e3), 0.52, 1.0, (0.0045, 0.009, 0.045, 0.09, 0.18), -0.13, 0.10, 300.0),
    "ETH": _Params((2.3e3, 3.5e3), 0.60, 1.3, (0.0075, 0.015, 0.03, 0.15, 0.3), -0.09, 0.11, 3000.0),
}


@dataclass(frozen=True, slots=True)
class Market:
    """One underlying on the path grid: index and the slow state driving the surface."""

    index_usd: FloatArray
    v_now: FloatArray  # the market's current variance estimate (annualized)
    premium: FloatArray  # IV / expected-vol premium, 0.9-1.3
    basis: FloatArray  # forward basis rate per year
    skew_slope: FloatArray
    skew_curv: FloatArray


def hash_u01(salt: int, *keys: np.ndarray) -> FloatArray:
    """Uniform (0, 1) numbers depending only on ``salt`` and integer keys (SplitMix64; uint64 wraps)."""
    h = np.full(np.broadcast_shapes(*(np.shape(k) for k in keys)), np.uint64(salt % 2**64), dtype=np.uint64)
    for key in keys:
        h = h ^ (np.asarray(key).astype(np.int64).astype(np.uint64) + np.uint64(0x9E3779B97F4A7C15))
        h = (h ^ (h >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        h = (h ^ (h >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        h = h ^ (h >> np.uint64(31))
    return ((h >> np.uint64(11)).astype(np.float64) + 0.5) / 2.0**53


def _ar1(a: float, u: FloatArray, x_prev: float = 0.0) -> FloatArray:
    """``x[n] = a x[n-1] + u[n]`` with ``x[-1] = x_prev``, vectorized in blocks.

    Within a block ``x[s+i] = a^(i+1) x[s-1] + a^i sum_{k<=i} a^-k u[s+k]``; blocks
    are short enough that ``a^-k`` stays below 2^20 (no overflow, ~1e-10 accuracy).
    """
    out = np.empty(u.size)
    block = max(1, int(20.0 * np.log(2.0) / max(-np.log(a), 1e-12)))
    for s in range(0, u.size, block):  # a few blocks per simulated month
        seg = u[s : s + block]
        pw = a ** np.arange(seg.size)
        out[s : s + block] = pw * (a * x_prev + np.cumsum(seg / pw))
        x_prev = float(out[s + seg.size - 1])
    return out


def _ou(rng: np.random.Generator, n: int, dt_years: float, half_life_days: float, sd: float,
        shocks: FloatArray | None = None) -> FloatArray:  # fmt: skip
    """Stationary Ornstein-Uhlenbeck path with mean 0 and std ``sd`` (exact AR(1) discretization)."""
    a = float(np.exp(-np.log(2.0) * dt_years * DAYS_PER_YEAR / half_life_days))
    innov = sd * np.sqrt(1.0 - a * a) * rng.standard_normal(n)
    innov[0] = sd * rng.standard_normal()
    if shocks is not None:
        innov = innov + shocks
    return _ar1(a, innov)


def _regime(t_ms: np.ndarray, end_ms: int, scenario: str) -> tuple[FloatArray, FloatArray]:
    """Realized-vol multiplier per path point, and the factor on the vol level IV prices.

    In ``vol_shock`` and ``mult_at_bound`` the option market keeps pricing the
    counterfactual calm path (IV lags the regime change, drifting up 20% in a
    shock) while the index realizes ``VOL_SHOCK_FACTOR`` / ``FREEZE_FACTOR`` times it.
    """
    ones = np.ones(t_ms.size)
    if scenario == "vol_shock":
        t0, target, drift = end_ms - VOL_SHOCK_LEAD_DAYS * MS_PER_DAY, VOL_SHOCK_FACTOR, 0.2
    elif scenario == "mult_at_bound":
        t0, target, drift = end_ms - FREEZE_LEAD_DAYS * MS_PER_DAY, FREEZE_FACTOR, 0.0
    else:
        return ones, ones
    ramp = np.clip((t_ms - t0) / (0.5 * MS_PER_DAY), 0.0, 1.0)  # 12-hour transition
    prog = np.clip((t_ms - t0) / max(end_ms - t0, 1.0), 0.0, 1.0)
    return 1.0 + (target - 1.0) * ramp, 1.0 + drift * prog


def true_multiplier(scenario: str, t_ms: np.ndarray, first_ms: int, end_ms: int) -> FloatArray:
    """The multiplier a `TRUTH_SCENARIOS` harvest prices with at epoch-ms times `t_ms`.

    ``drift``: linear from `DRIFT_FROM` at `first_ms` (the first written snapshot)
    to `DRIFT_TO` at `end_ms`; ``flat``: `FLAT_MULTIPLIER`.
    """
    if scenario not in TRUTH_SCENARIOS:
        raise InvalidInputError(f"`scenario` must be one of {', '.join(TRUTH_SCENARIOS)}; got {scenario!r}")
    t = np.asarray(t_ms, dtype=np.float64)
    if scenario == "flat":
        return np.full(t.shape, FLAT_MULTIPLIER)
    prog = np.clip((t - first_ms) / max(end_ms - first_ms, 1.0), 0.0, 1.0)
    return DRIFT_FROM + (DRIFT_TO - DRIFT_FROM) * prog


def _variance_estimate(t_ms: np.ndarray, index_usd: FloatArray, dt: float, v_long: float) -> FloatArray:
    """The market's current variance: 0.65 RV_7d^2 + 0.35 x 1-day-half-life EWMA of squared returns."""
    rv, _ = trailing_realized_vol(t_ms / 1e3, index_usd)
    with np.errstate(divide="ignore", invalid="ignore"):
        r2 = np.concatenate(([0.0], np.diff(np.log(index_usd)) ** 2)) / dt
    a = float(np.exp(-np.log(2.0) * dt * DAYS_PER_YEAR))
    ewma = _ar1(a, (1.0 - a) * r2, v_long)
    return np.where(np.isfinite(rv), 0.65 * rv**2 + 0.35 * ewma, v_long)


def simulate_markets(t_ms: np.ndarray, end_ms: int, seed: int, scenario: str,
                      first_ms: int | None = None) -> dict[str, Market]:
    """Joint BTC/ETH index paths and surface state on the grid ``t_ms`` (both always simulated)."""
    rng = np.random.default_rng([seed, 0x5EED])
    n = t_ms.size
    dt = float(t_ms[1] - t_ms[0]) / MS_PER_YEAR if n > 1 else 1.0 / (DAYS_PER_YEAR * 24)
    eps = rng.standard_normal((2, n))
    jump_on = rng.random(n) < 20.0 * dt  # ~20 crypto-wide jumps a year
    jump_size = rng.normal(-0.003, 0.02, n) * jump_on
    hours = (t_ms % MS_PER_DAY) / 3.6e6
    weekday = (t_ms // MS_PER_DAY + 3) % 7  # Monday = 0
    season = (1.0 + 0.2 * np.cos(2 * np.pi * (hours - 15.0) / 24.0)) * np.where(weekday >= 5, 0.75, 1.0)
    regime, iv_level = _regime(t_ms, end_ms, scenario)
    common_vol = _ou(rng, n, dt, 4.0, 0.2, np.where(jump_on, 0.2, 0.0))
    out: dict[str, Market] = {}
    for j, und in enumerate(UNDERLYINGS):
        p = PARAMS[und]
        log_vol = common_vol + _ou(rng, n, dt, 3.0, 0.12)
        sigma = p.vol_level * np.exp(log_vol - 0.5 * 0.23**2) * season
        shock = eps[0] if j == 0 else 0.8 * eps[0] + 0.6 * eps[1]
        spot0 = rng.uniform(*p.spot0_usd)
        paths = []
        for x in (np.ones(n), regime) if scenario in ("vol_shock", "mult_at_bound") else (regime,):
            ret = x * sigma * np.sqrt(dt) * shock - 0.5 * (x * sigma) ** 2 * dt + p.jump_scale * x * jump_size
            ret[0] = 0.0
            paths.append(np.round(spot0 * np.exp(np.cumsum(ret)), 2))
        # IV follows the calm path where the scenario says the market lags.
        v_now = _variance_estimate(t_ms, paths[0], dt, p.vol_level**2) * iv_level**2
        premium = 1.1 + 0.2 * np.tanh(_ou(rng, n, dt, 5.0, 0.7))
        if scenario in TRUTH_SCENARIOS:
            # The model's own construction: the calibrator's trailing RV_7d (6 h minimum span) times m(t).
            rv, _ = trailing_realized_vol(t_ms / 1e3, paths[0], min_span_seconds=6 * 3600.0)
            v_now = np.where(np.isfinite(rv), rv, p.vol_level) ** 2
            premium = true_multiplier(scenario, t_ms, t_ms[0] if first_ms is None else first_ms, end_ms)
        out[und] = Market(
            index_usd=paths[-1],
            v_now=v_now,
            premium=premium,
            basis=0.065 + 0.03 * np.tanh(_ou(rng, n, dt, 10.0, 0.8)),
            skew_slope=p.skew_slope + 0.05 * np.tanh(_ou(rng, n, dt, 7.0, 0.8)),
            skew_curv=p.skew_curv + 0.02 * np.tanh(_ou(rng, n, dt, 7.0, 0.8)),
        )
    return out

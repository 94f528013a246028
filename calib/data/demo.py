"""Synthetic Deribit-like option harvests for demos, tests and benchmarks.

`generate_demo_harvest` writes BTC/ETH option snapshots in the harvested layout
(SPEC section 2): an index with clustered stochastic volatility and jumps, the
Deribit expiry calendar and strike grids, an RV-driven ATM level with a term
structure and a smile in standardized moneyness ``z = ln(K/F)/(atm_iv sqrt T)``,
Black-76 coin marks, quotes, greeks, open interest and volume in Deribit's
conventions. Scenarios (`SCENARIOS`) inject the pathologies a calibration must grade:

``normal``            clean data (status ok).
``vol_shock``         realized vol x3 over the last 12 days while IV keeps pricing the calm
                      path (+20%): IV / RV_7d ~0.4 for most of a 14-day lookback (mult << 0.7).
``mult_at_bound``     index vol x0.2 over the last 20 days, IV unchanged: IV / RV ~5 (mult 4.0).
``usd_marks``         ``mark_price``, ``bid_price``, ``ask_price`` in USD (x F), not coin.
``iv_fraction``       ``mark_iv``, ``bid_iv``, ``ask_iv`` as fractions (0.55), not percent.
``no_mark_iv``        no ``mark_iv`` column (IV must be inverted: degraded).
``no_index``          no ``index_price`` column (RV falls back: degraded).
``missing_required``  no ``underlying_price`` column (failed).
``outage``            no snapshots 11 to 4 days before ``end``: 50% of the last 14 days.
``truncated_file``    the middle file of the last 14 days cut to half its bytes.
``drift``             a known true multiplier: ATM IV = m(t) x RV_7d exactly (no term structure),
                      m(t) rising linearly from 0.95 at the first snapshot to 1.35 at ``end``.
``flat``              the same construction with m(t) = 1.15 throughout (interval coverage).

Generation is vectorized and runs one UTC day at a time, so memory stays bounded.
"""

from __future__ import annotations

import itertools
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Literal

import numpy as np
import polars as pl
from scipy.special import ndtri

from calib._typing import UNDERLYINGS, FloatArray
from calib.config import DAYS_PER_YEAR, MIN_TICK_COIN
from calib.data.layout import atomic_write_parquet, partition_dir, snapshot_path
from calib.data.schema import EXPIRY_HOUR_UTC, HARVEST_SCHEMA
from calib.errors import InvalidInputError
from calib.numerics.black76 import black76_price_coin, black76_vega_coin, intrinsic_coin
from calib.numerics.normal import norm_cdf
from calib.numerics.realized_vol import trailing_realized_vol

SCENARIOS: tuple[str, ...] = (
    "normal", "vol_shock", "usd_marks", "iv_fraction", "no_mark_iv", "no_index",
    "missing_required", "outage", "truncated_file", "mult_at_bound", "drift", "flat",
)  # fmt: skip
TRUTH_SCENARIOS: tuple[str, ...] = ("drift", "flat")  # scenarios whose IV / RV_7d is a known multiplier
DRIFT_FROM, DRIFT_TO, FLAT_MULTIPLIER = 0.95, 1.35, 1.15
FilesPer = Literal["day", "snapshot"]

MS_PER_DAY = 86_400_000
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MS_PER_YEAR = DAYS_PER_YEAR * MS_PER_DAY
WARMUP_DAYS = 8.0  # hidden history before the first snapshot: RV_7d is defined from the start
LOOKBACK_DAYS = 14.0  # the window the outage / truncated-file pathologies aim at
VOL_SHOCK_LEAD_DAYS = 12.0  # vol_shock: realized vol x3 from this long before `end`
VOL_SHOCK_FACTOR = 3.0
FREEZE_LEAD_DAYS = 20.0  # mult_at_bound: index vol x0.2 from this long before `end`
FREEZE_FACTOR = 0.2
ZERO_MARK_COIN = 2e-5  # below this, near expiry, Deribit shows mark_price 0.0
ZERO_MARK_MAX_DTE = 1.0
MAX_SMILE_RATIO = 3.0
KIND_DAILY, KIND_WEEKLY, KIND_MONTHLY, KIND_QUARTERLY = 0, 1, 2, 3
# Strike grid per expiry kind: (step level, downside fraction, upside fraction) around the spot range.
_GRID: dict[int, tuple[tuple[int, float, float], ...]] = {
    KIND_DAILY: ((0, 0.03, 0.03), (1, 0.08, 0.10)),
    KIND_WEEKLY: ((1, 0.06, 0.08), (2, 0.20, 0.25)),
    KIND_MONTHLY: ((1, 0.12, 0.12), (2, 0.40, 0.50)),
    KIND_QUARTERLY: ((1, 0.06, 0.06), (2, 0.25, 0.35), (3, 0.50, 1.0), (4, 0.70, 2.2)),
}
_KIND_OI = np.array([0.3, 0.6, 1.5, 1.5])  # open-interest scale by kind
_KIND_OI_WIDTH = np.array([0.04, 0.08, 0.2, 0.35])  # OI decay in |ln(K/S_listing)|


@dataclass(frozen=True, slots=True)
class _Params:
    spot0_usd: tuple[float, float]  # range of the starting index level
    vol_level: float  # long-run annualized vol (fraction)
    jump_scale: float
    strike_fracs: tuple[float, ...]  # strike step / spot for grid levels 0..4
    skew_slope: float  # ratio^2 = 1 + slope z + curv z^2
    skew_curv: float
    oi_scale: float  # contracts


_PARAMS = {
    "BTC": _Params((65e3, 90e3), 0.52, 1.0, (0.0045, 0.009, 0.045, 0.09, 0.18), -0.13, 0.10, 300.0),
    "ETH": _Params((2.3e3, 3.5e3), 0.60, 1.3, (0.0075, 0.015, 0.03, 0.15, 0.3), -0.09, 0.11, 3000.0),
}


@dataclass(frozen=True, slots=True, kw_only=True)
class DemoSpec:
    """What to generate.

    Parameters
    ----------
    underlyings : subset of ``("BTC", "ETH")``.
    end : last snapshot time (tz-aware, UTC), inclusive.
    days : history length in days (lookback 14 + RV warm-up 7 + margin by default).
    step_minutes : snapshot spacing in minutes.
    seed : seed of every random draw; the same spec gives the same data.
    scenario : one of `SCENARIOS`.
    files_per : ``"day"`` (one file per UTC date partition) or ``"snapshot"``.
    max_instruments : cap on instruments per snapshot (the nearest to ATM in
        standardized distance are kept); None keeps the full Deribit-like chain.
    """

    underlyings: tuple[str, ...] = ("BTC", "ETH")
    end: datetime
    days: float = 22.0
    step_minutes: float = 60.0
    seed: int = 7
    scenario: str = "normal"
    files_per: FilesPer = "day"
    max_instruments: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "underlyings", tuple(self.underlyings))  # accept lists
        und_ok = set(self.underlyings) <= set(UNDERLYINGS) and len(set(self.underlyings)) == len(self.underlyings)
        checks = (
            (und_ok and bool(self.underlyings),
             f"`underlyings` must be distinct values of {', '.join(UNDERLYINGS)}; got {self.underlyings}"),
            (self.end.utcoffset() is not None, f"`end` must be timezone-aware (UTC); got naive {self.end!r}"),
            (self.days > 0, f"`days` must be positive; got {self.days}"),
            (self.seed >= 0, f"`seed` must be a non-negative integer; got {self.seed}"),
            (1.0 <= self.step_minutes <= 1440.0, f"`step_minutes` must be within 1-1440; got {self.step_minutes}"),
            (self.scenario in SCENARIOS, f"`scenario` must be one of {', '.join(SCENARIOS)}; got {self.scenario!r}"),
            (self.files_per in ("day", "snapshot"), f"`files_per` must be 'day' or 'snapshot'; got {self.files_per!r}"),
            (self.max_instruments is None or self.max_instruments >= 1,
             f"`max_instruments` must be positive or None; got {self.max_instruments}"),
        )  # fmt: skip
        for ok, message in checks:
            if not ok:
                raise InvalidInputError(message)


@dataclass(frozen=True, slots=True, kw_only=True)
class DemoSummary:
    """What `generate_demo_harvest` wrote (``rows`` counts rows written, truncated file included)."""

    files: int
    rows: int
    snapshots: int
    underlyings: tuple[str, ...]
    start: datetime
    end: datetime
    scenario: str
    data_root: Path

    def to_dict(self) -> dict[str, object]:
        """JSON-ready dict: times as ISO-8601 UTC strings, the root as a string."""
        d = asdict(self)
        return {**d, "underlyings": list(self.underlyings), "start": self.start.isoformat(),
                "end": self.end.isoformat(), "data_root": str(self.data_root)}  # fmt: skip


@dataclass(frozen=True, slots=True)
class _Market:
    """One underlying on the path grid: index and the slow state driving the surface."""

    index_usd: FloatArray
    v_now: FloatArray  # the market's current variance estimate (annualized)
    premium: FloatArray  # IV / expected-vol premium, 0.9-1.3
    basis: FloatArray  # forward basis rate per year
    skew_slope: FloatArray
    skew_curv: FloatArray


def _hash_u01(salt: int, *keys: np.ndarray) -> FloatArray:
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


def _simulate_markets(t_ms: np.ndarray, end_ms: int, seed: int, scenario: str,
                      first_ms: int | None = None) -> dict[str, _Market]:
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
    out: dict[str, _Market] = {}
    for j, und in enumerate(UNDERLYINGS):
        p = _PARAMS[und]
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
        out[und] = _Market(
            index_usd=paths[-1],
            v_now=v_now,
            premium=premium,
            basis=0.065 + 0.03 * np.tanh(_ou(rng, n, dt, 10.0, 0.8)),
            skew_slope=p.skew_slope + 0.05 * np.tanh(_ou(rng, n, dt, 7.0, 0.8)),
            skew_curv=p.skew_curv + 0.02 * np.tanh(_ou(rng, n, dt, 7.0, 0.8)),
        )
    return out


def _last_friday(month: np.ndarray) -> np.ndarray:
    """Epoch day of the last Friday of each ``datetime64[M]`` month."""
    last_day = ((month + 1).astype("datetime64[D]") - 1).astype(np.int64)
    return last_day - (last_day + 3 - 4) % 7


def expiry_calendar(first_ms: int, last_ms: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Deribit expiries alive at some time in ``[first_ms, last_ms]`` (epoch milliseconds).

    Returns
    -------
    expiry_ms, listed_ms : int64 epoch milliseconds (expiries at 08:00 UTC).
    kind : 0 daily, 1 weekly (Friday), 2 monthly (last Friday), 3 quarterly
        (last Friday of Mar/Jun/Sep/Dec).

    Notes
    -----
    Listing: dailies 4 days ahead, weeklies 21 days, monthlies on the last
    Friday three months earlier, quarterlies on the last Friday a year earlier.
    """
    days = np.arange(first_ms // MS_PER_DAY, last_ms // MS_PER_DAY + 400, dtype=np.int64)
    month = days.astype("datetime64[D]").astype("datetime64[M]")
    is_fri = (days + 3) % 7 == 4
    last_fri = is_fri & (_last_friday(month) == days)
    quarterly = last_fri & (month.astype(np.int64) % 3 == 2)
    kind = np.select([quarterly, last_fri, is_fri], [KIND_QUARTERLY, KIND_MONTHLY, KIND_WEEKLY], KIND_DAILY)
    list_day = np.select(
        [kind == KIND_QUARTERLY, kind == KIND_MONTHLY, kind == KIND_WEEKLY],
        [_last_friday(month - 12), _last_friday(month - 3), days - 21],
        days - 4,
    )
    hour_ms = EXPIRY_HOUR_UTC * 3_600_000
    expiry_ms, listed_ms = days * MS_PER_DAY + hour_ms, list_day * MS_PER_DAY + hour_ms
    alive = (expiry_ms > first_ms) & (listed_ms <= last_ms)
    return expiry_ms[alive], listed_ms[alive], kind[alive].astype(np.int64)


def _nice_step(x: float) -> float:
    """Smallest of {1, 2.5, 5} x 10^k that is >= x (Deribit-style strike steps: 25, 50, 100, 250, ...)."""
    e = 10.0 ** np.floor(np.log10(x))
    return float(e * next(m for m in (1.0, 2.5, 5.0, 10.0) if m * e >= x * (1 - 1e-12)))


def strike_grid(kind: int, ref_usd: float, lo_usd: float, hi_usd: float, fracs: tuple[float, ...]) -> FloatArray:
    """Strikes (USD) of one expiry: fine steps near the money, coarser and wider for longer kinds.

    Parameters
    ----------
    kind : expiry kind (0 daily ... 3 quarterly), selects the levels of `_GRID`.
    ref_usd : index at listing; sets the step of each level, ``nice(ref x fracs[level])``.
    lo_usd, hi_usd : lowest / highest index since listing; each level covers
        ``[lo (1 - down), hi (1 + up)]``, so strikes are added, never removed, as spot moves.
    fracs : step / spot per level for the underlying.
    """
    parts = []
    for level, down, up in _GRID[kind]:
        step = _nice_step(ref_usd * fracs[level])
        k_lo, k_hi = np.ceil(lo_usd * (1 - down) / step), np.floor(hi_usd * (1 + up) / step)
        parts.append(np.arange(k_lo, k_hi + 1) * step)
    ks = np.unique(np.concatenate(parts))
    return ks[ks > 0]


def _day_instruments(und: str, cal: tuple[np.ndarray, ...], t_ms: np.ndarray, mkt: _Market,
                     day_lo: FloatArray, day_hi: FloatArray, t_day0: int, i0: int, i1: int
                     ) -> dict[str, np.ndarray]:  # fmt: skip
    """Instruments listed during snapshots ``t_ms[i0:i1]``: expiry, listing, kind, strike, type, ref."""
    expiry_ms, listed_ms, kinds = cal
    today = int(t_ms[i0] // MS_PER_DAY) - t_day0
    parts = []
    for e in np.flatnonzero((listed_ms <= t_ms[i1 - 1]) & (expiry_ms > t_ms[i0])):  # ~12 expiries
        i_list = min(int(np.searchsorted(t_ms, listed_ms[e])), i1 - 1)
        d_list = min(int(t_ms[i_list] // MS_PER_DAY) - t_day0, today)
        ref = float(mkt.index_usd[i_list])
        ks = strike_grid(int(kinds[e]), ref, float(day_lo[d_list : today + 1].min()),
                         float(day_hi[d_list : today + 1].max()), _PARAMS[und].strike_fracs)  # fmt: skip
        parts.append(np.stack(np.broadcast_arrays(expiry_ms[e], listed_ms[e], kinds[e], ks, ref)))
    cols = np.repeat(np.concatenate(parts, axis=1), 2, axis=1)  # each strike twice: call, then put
    names = ("expiry_ms", "listed_ms", "kind", "strike", "ref_usd")
    out = {name: cols[j].astype(np.int64 if j < 3 else np.float64) for j, name in enumerate(names)}
    out["is_call"] = np.arange(cols.shape[1]) % 2 == 0
    return out


def _quote_iv_pct(price_coin: FloatArray, f: FloatArray, k: FloatArray, t: FloatArray, c: np.ndarray,
                  sigma0: FloatArray, price0: FloatArray) -> FloatArray:  # fmt: skip
    """Implied vol (percent, 2 dp) of tick-rounded quotes by log-price Newton from a nearby start.

    Starts from the unrounded quote's vol ``sigma0`` (price ``price0``): rounding
    moves a quote by about one tick, so two steps usually suffice. A step below
    1e-4 in vol is accepted without another evaluation (Newton's error is then
    ~1e-8, far below the 0.01-point rounding). NaN where the quote has no vol
    (no quote, at or below intrinsic).
    """
    intr = intrinsic_coin(f, k, c)
    out = np.full(price_coin.size, np.nan)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore", under="ignore"):
        q = price_coin - intr
        act = np.flatnonzero(np.isfinite(q) & (q > 1e-12))
        s, p = sigma0[act], price0[act] - intr[act]
        for it in range(10):
            fa, ka, ta, qa = f[act], k[act], t[act], q[act]
            if it:
                p = black76_price_coin(fa, ka, ta, s, c[act]) - intr[act]
            step = (np.log(p) - np.log(qa)) * p / black76_vega_coin(fa, ka, ta, s)
            s_new = np.where(np.isfinite(step), np.clip(s - step, 0.01, 20.0),
                             np.where(p < qa, s * 1.5, s * 0.7))  # fmt: skip
            done = np.abs(step) < 1e-4
            out[act[done]] = s_new[done]
            act, s = act[~done], s_new[~done]
            if act.size == 0:
                break
    iv_pct = np.round(100.0 * out, 2)
    return np.where(iv_pct < 999.0, iv_pct, np.nan)


def _tick_coin(price_coin: FloatArray) -> FloatArray:
    """Deribit option tick: 0.0001 below 0.005 coin, 0.0005 above."""
    return np.where(price_coin < 0.005, MIN_TICK_COIN, 5 * MIN_TICK_COIN)


def _quotes(f: FloatArray, k: FloatArray, t: FloatArray, c: np.ndarray, sigma: FloatArray, mark_coin: FloatArray,
            delta: FloatArray, z: FloatArray, rng: np.random.Generator) -> dict[str, FloatArray]:  # fmt: skip
    """Bid/ask prices (coin, on the tick grid, NaN = no quote) and their IVs (percent).

    The spread is set in vol points: wider near expiry, in the wings and in the
    money; some quotes are missing, mostly deep in the money.
    """
    n = f.size
    dte = t * DAYS_PER_YEAR
    itm, deep = np.abs(delta) > 0.6, np.abs(delta) > 0.9
    spread_vp = (1.3 + 4.5 * np.exp(-dte / 4.0)) * (1 + 0.35 * np.abs(z)) * np.where(itm, 1.6, 1.0)
    half_vp = 0.5 * spread_vp * np.exp(0.25 * rng.standard_normal((2, n)))
    out: dict[str, FloatArray] = {}
    for j, side in enumerate(("bid", "ask")):
        s_raw = np.maximum(sigma + (2 * j - 1) * half_vp[j] / 100.0, 0.01)
        p_raw = black76_price_coin(f, k, t, s_raw, c)
        tick = _tick_coin(p_raw)
        if side == "bid":
            px = np.round(np.floor(p_raw / tick + 1e-9) * tick, 4)
            px = np.where((px > 0) & (rng.random(n) > 0.02 + 0.25 * deep + 0.08 * itm), px, np.nan)
        else:
            px = np.maximum(np.round(np.ceil(p_raw / tick - 1e-9) * tick, 4),
                            np.round(mark_coin + _tick_coin(mark_coin), 4))  # fmt: skip
            px = np.where(rng.random(n) > 0.01 + 0.2 * deep + 0.1 * itm, px, np.nan)
        out[f"{side}_price"] = px
        out[f"{side}_iv"] = _quote_iv_pct(px, f, k, t, c, s_raw, p_raw)
    return out


def _labels(und: str, inst: dict[str, np.ndarray]) -> pl.DataFrame:
    """``option_type`` and the Deribit ``instrument_name`` (``BTC-5MAY23-30000-P``) per instrument."""
    cp = pl.when("c").then(pl.lit("C")).otherwise(pl.lit("P"))
    k = pl.col("k")
    whole = k.cast(pl.Int64).cast(pl.String)
    strike = pl.when(k == k.floor()).then(whole).otherwise(k.cast(pl.String).str.replace(".", "d", literal=True))
    day = pl.from_epoch("e", time_unit="ms").dt.strftime("%-d%b%y").str.to_uppercase()
    return pl.DataFrame({"e": inst["expiry_ms"], "k": inst["strike"], "c": inst["is_call"]}).select(
        cp.alias("option_type"), pl.concat_str(pl.lit(und), day, strike, cp, separator="-").alias("instrument_name")
    )


def _day_frame(und: str, mkt: _Market, t_ms: np.ndarray, snaps: np.ndarray, inst: dict[str, np.ndarray],
               spec: DemoSpec, day: int) -> pl.DataFrame:  # fmt: skip
    """All quotes of one underlying for the snapshots ``snaps`` (path indices) of one UTC day."""
    ts = t_ms[snaps]
    alive = (ts[:, None] >= inst["listed_ms"][None, :]) & (ts[:, None] < inst["expiry_ms"][None, :])
    if spec.max_instruments is not None and alive.sum(axis=1).max(initial=0) > spec.max_instruments:
        tau = np.maximum((inst["expiry_ms"] - ts[0]) / MS_PER_YEAR, 1.0 / DAYS_PER_YEAR)
        dist = np.abs(np.log(inst["strike"] / mkt.index_usd[snaps[0]])) / np.sqrt(tau)
        order = np.argsort(np.where(alive, dist[None, :], np.inf), axis=1, kind="stable")
        rank = np.empty_like(order)
        np.put_along_axis(rank, order, np.arange(order.shape[1])[None, :], axis=1)
        alive &= rank < spec.max_instruments
    si, ii = np.nonzero(alive)  # snapshot-major row order
    n = si.size
    uc = UNDERLYINGS.index(und)
    salt = (spec.seed << 8) | uc
    rng = np.random.default_rng([spec.seed, uc, day, 0xDA7])
    path = snaps[si]
    snap_ms = ts[si]
    exp_ms, k, c = inst["expiry_ms"][ii], inst["strike"][ii], inst["is_call"][ii]
    t_years = (exp_ms - snap_ms) / MS_PER_YEAR
    idx = mkt.index_usd[path]
    f = np.round(idx * np.exp(mkt.basis[path] * t_years), 2)

    # ATM level: premium x expected average variance to expiry, plus a term premium and noise.
    v_long = _PARAMS[und].vol_level ** 2
    kt = 6.0 * t_years
    var = v_long + (mkt.v_now[path] - v_long) * (-np.expm1(-kt) / kt)
    e_exp = 0.015 * ndtri(_hash_u01(salt + 1, exp_ms))
    e_snap = 0.002 * ndtri(_hash_u01(salt + 2, exp_ms, snap_ms))
    if spec.scenario in TRUTH_SCENARIOS:  # IV / RV_7d is exactly m(t), up to the same noise
        atm = mkt.premium[path] * np.sqrt(mkt.v_now[path]) * (1 + e_exp + e_snap)
    else:
        atm = mkt.premium[path] * np.sqrt(var) * (1 + 0.05 * -np.expm1(-t_years / 0.25)) * (1 + e_exp + e_snap)
    sqrt_t = np.sqrt(t_years)
    z = np.log(k / f) / (atm * sqrt_t)
    slope = mkt.skew_slope[path] + 0.015 * ndtri(_hash_u01(salt + 3, exp_ms))
    curv = mkt.skew_curv[path] + 0.008 * ndtri(_hash_u01(salt + 4, exp_ms))
    ratio = np.minimum(np.sqrt(np.maximum(1.0 + slope * z + curv * z * z, 0.25)), MAX_SMILE_RATIO)
    mark_iv_pct = np.round(np.maximum(100.0 * atm * ratio, 5.0), 2)
    sigma = mark_iv_pct / 100.0
    model_coin = black76_price_coin(f, k, t_years, sigma, c)
    zero = (model_coin < ZERO_MARK_COIN) & (t_years * DAYS_PER_YEAR < ZERO_MARK_MAX_DTE)
    mark_coin = np.where(zero, 0.0, np.maximum(model_coin, MIN_TICK_COIN))

    # Greeks, Deribit conventions: forward delta, vega USD per vol point, theta USD per day.
    d1 = (np.log(f / k) + 0.5 * sigma * sigma * t_years) / (sigma * sqrt_t)
    pdf = np.exp(-0.5 * d1 * d1) / np.sqrt(2 * np.pi)
    vega_coin = pdf * sqrt_t
    n_d1 = norm_cdf(d1)  # the project's own N(x), as the calibration prices with
    delta = np.where(c, n_d1, n_d1 - 1.0)
    greeks = {
        "delta": np.round(delta, 5) + 0.0,  # no negative zeros
        "gamma": np.round(pdf / (f * sigma * sqrt_t), 5),
        "vega": np.round(f * vega_coin / 100.0, 5),
        "theta": -f * pdf * sigma / (2 * sqrt_t) / DAYS_PER_YEAR,
    }
    # Near expiry Deribit's theta is the one-day price change (at most the time value).
    near = np.flatnonzero(t_years < 4.0 / DAYS_PER_YEAR)
    t_next = np.maximum(t_years[near] - 1.0 / DAYS_PER_YEAR, 0.0)
    decay_coin = black76_price_coin(f[near], k[near], t_next, sigma[near], c[near]) - model_coin[near]
    greeks["theta"][near] = f[near] * decay_coin
    greeks["theta"] = np.round(greeks["theta"], 5)

    itm = np.abs(delta) > 0.6
    quotes = _quotes(f, k, t_years, c, sigma, mark_coin, delta, z, rng)

    # Open interest and 24h volume: stable per instrument, larger near the money and for long kinds.
    ikey = (exp_ms, np.round(k * 100), c)
    dist0 = np.abs(np.log(k / inst["ref_usd"][ii]))
    oi_base = _PARAMS[und].oi_scale * _KIND_OI[inst["kind"][ii]] * np.exp(
        -dist0 / _KIND_OI_WIDTH[inst["kind"][ii]] + ndtri(_hash_u01(salt + 5, *ikey))
    )
    age_days = (snap_ms - inst["listed_ms"][ii]) / MS_PER_DAY
    oi = oi_base * np.minimum(1.0, 0.05 + age_days / 7.0) * (_hash_u01(salt + 6, *ikey) > 0.08 + 0.4 * itm)
    turnover = 0.15 * np.exp(0.8 * ndtri(_hash_u01(salt + 7, *ikey, np.full(n, day))))
    vol_24h = oi * turnover * np.exp(-np.abs(z) / 1.5) * (_hash_u01(salt + 8, *ikey, np.full(n, day)) > 0.25)

    if spec.scenario == "usd_marks":
        mark_coin = mark_coin * f
        quotes = {key: (v * f if key.endswith("_price") else v) for key, v in quotes.items()}
    if spec.scenario == "iv_fraction":
        mark_iv_pct = mark_iv_pct / 100.0
        quotes = {key: (v / 100.0 if key.endswith("_iv") else v) for key, v in quotes.items()}

    labels = _labels(und, inst)[ii]
    data = {
        "snapshot_ts": pl.Series(snap_ms, dtype=pl.Int64).cast(pl.Datetime("ms")).dt.replace_time_zone("UTC"),
        "instrument_name": labels["instrument_name"],
        "expiry_ts": pl.Series(exp_ms, dtype=pl.Int64).cast(pl.Datetime("ms")).dt.replace_time_zone("UTC"),
        "strike": k,
        "option_type": labels["option_type"],
        "mark_price": mark_coin,
        "mark_iv": mark_iv_pct,
        "underlying_price": f,
        "index_price": idx,
        **{key: pl.Series(key, v, nan_to_null=True) for key, v in quotes.items()},
        "open_interest": np.round(oi, 1),
        "volume": np.round(vol_24h, 1),
        "interest_rate": np.zeros(n),
        **greeks,
    }
    df = pl.DataFrame(data).select([pl.col(name).cast(dtype) for name, dtype in HARVEST_SCHEMA.items()])
    dropped = {"no_mark_iv": "mark_iv", "no_index": "index_price", "missing_required": "underlying_price"}
    return df.drop(dropped[spec.scenario]) if spec.scenario in dropped else df


def _utc_ms(ms: int) -> datetime:
    return _EPOCH + timedelta(milliseconds=ms)


def _snapshot_grid(spec: DemoSpec) -> tuple[np.ndarray, np.ndarray, int]:
    """Path grid (ms, warm-up included), indices of the written snapshots, end in ms."""
    end_ms = (spec.end - _EPOCH) // timedelta(milliseconds=1)
    step_ms = round(spec.step_minutes * 60_000)
    n_snap = int(np.floor(spec.days * MS_PER_DAY / step_ms + 1e-9)) + 1
    n_warm = int(np.ceil(WARMUP_DAYS * MS_PER_DAY / step_ms))
    t_ms = end_ms - step_ms * np.arange(n_snap + n_warm - 1, -1, -1, dtype=np.int64)
    snaps = np.arange(n_warm, n_warm + n_snap)
    if spec.scenario == "outage":  # drop half of the last (up to) 14 days
        w = min(LOOKBACK_DAYS, spec.days) * MS_PER_DAY
        gap = (t_ms[snaps] >= end_ms - w * 11 / 14) & (t_ms[snaps] < end_ms - w * 4 / 14)
        snaps = snaps[~gap]
    return t_ms, snaps, end_ms


def _truncate_one(written: list[tuple[str, int, Path]], und: str, end_ms: int, days: float) -> None:
    """Cut the middle file of ``und`` in the last (up to) 14 days to half its bytes."""
    w = min(LOOKBACK_DAYS, days) * MS_PER_DAY
    mine = [(t, p) for u, t, p in written if u == und]
    recent = [p for t, p in mine if t >= end_ms - w] or [p for _, p in mine]
    victim = recent[len(recent) // 2]
    blob = victim.read_bytes()
    victim.write_bytes(blob[: len(blob) // 2])


def generate_demo_harvest(data_root: Path, spec: DemoSpec) -> DemoSummary:
    """Write a synthetic Deribit harvest below ``data_root`` and describe it.

    Parameters
    ----------
    data_root : root of the harvested layout; files go to
        ``<data_root>/<UND>/date=YYYY-MM-DD/demo.parquet`` (``files_per="day"``)
        or ``.../demo_YYYYMMDDTHHMMSSZ.parquet`` (``files_per="snapshot"``).
    spec : what to generate; the same spec always gives the same rows.

    Returns
    -------
    DemoSummary with the counts of files, rows and snapshots written.

    Notes
    -----
    Per quote: ``F = index exp(basis T)``; ``atm = premium sqrt(v_long + (v_now -
    v_long)(1 - e^{-kT})/(kT))``; ``mark_iv = atm sqrt(1 + a z + b z^2)`` (capped at
    3x ATM) with ``z = ln(K/F)/(atm sqrt T)``; ``mark_price`` is the Black-76 coin
    price of ``mark_iv`` (2 dp percent), floored at 0.0001 except deep
    out-of-the-money quotes under a day to expiry, which show 0.0 as on Deribit.
    ``v_now`` blends trailing RV_7d and a 1-day EWMA of squared index returns.
    Memory is bounded by one day of one underlying.
    """
    data_root = Path(data_root)
    t_ms, snaps, end_ms = _snapshot_grid(spec)
    markets = _simulate_markets(t_ms, end_ms, spec.seed, spec.scenario, first_ms=int(t_ms[snaps[0]]))
    cal = expiry_calendar(int(t_ms[snaps[0]]), end_ms)
    t_day = t_ms // MS_PER_DAY
    t_day0 = int(t_day[0])
    snap_day = t_day[snaps]
    day_starts = np.flatnonzero(np.r_[True, snap_day[1:] != snap_day[:-1]])
    bounds = np.r_[day_starts, snaps.size]
    written: list[tuple[str, int, Path]] = []  # (underlying, last snapshot ms, file), in time order
    rows = 0
    for und in spec.underlyings:
        mkt = markets[und]
        n_days = int(t_day[-1]) - t_day0 + 1
        day_lo = np.full(n_days, np.inf)
        day_hi = np.full(n_days, -np.inf)
        np.minimum.at(day_lo, t_day - t_day0, mkt.index_usd)
        np.maximum.at(day_hi, t_day - t_day0, mkt.index_usd)
        for b0, b1 in itertools.pairwise(bounds):  # one UTC day at a time
            day_snaps = snaps[b0:b1]
            inst = _day_instruments(und, cal, t_ms, mkt, day_lo, day_hi, t_day0,
                                    int(day_snaps[0]), int(day_snaps[-1]) + 1)  # fmt: skip
            df = _day_frame(und, mkt, t_ms, day_snaps, inst, spec, int(snap_day[b0]))
            rows += df.height
            if spec.files_per == "day":
                path = partition_dir(data_root, und, _utc_ms(int(t_ms[day_snaps[0]]))) / "demo.parquet"
                written.append((und, int(t_ms[day_snaps[-1]]), atomic_write_parquet(df, path)))
            else:
                for (ts,), part in df.partition_by("snapshot_ts", as_dict=True, maintain_order=True).items():
                    path = snapshot_path(data_root, und, ts, stem="demo")
                    written.append((und, int(ts.timestamp() * 1000), atomic_write_parquet(part, path)))
            del df
    if spec.scenario == "truncated_file":
        _truncate_one(written, spec.underlyings[0], end_ms, spec.days)
    start, end = _utc_ms(int(t_ms[snaps[0]])), _utc_ms(int(t_ms[snaps[-1]]))
    return DemoSummary(files=len(written), rows=rows, snapshots=int(snaps.size), underlyings=spec.underlyings,
                       start=start, end=end, scenario=spec.scenario, data_root=data_root)  # fmt: skip

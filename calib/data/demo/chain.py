"""The listed chain per day: the Deribit expiry calendar, strike grids, and the quotes (Black-76 coin marks, IVs, greeks, OI)."""

from __future__ import annotations

import numpy as np
import polars as pl
from scipy.special import ndtri

from calib._typing import UNDERLYINGS, FloatArray
from calib.config import DAYS_PER_YEAR, MIN_TICK_COIN
from calib.data.demo.market import PARAMS, Market, hash_u01
from calib.data.demo.spec import (
    KIND_DAILY,
    KIND_MONTHLY,
    KIND_QUARTERLY,
    KIND_WEEKLY,
    MAX_SMILE_RATIO,
    MS_PER_DAY,
    MS_PER_YEAR,
    TRUTH_SCENARIOS,
    ZERO_MARK_COIN,
    ZERO_MARK_MAX_DTE,
    DemoSpec,
)
from calib.data.schema import EXPIRY_HOUR_UTC, HARVEST_SCHEMA
from calib.numerics.black76 import black76_price_coin, black76_vega_coin, intrinsic_coin
from calib.numerics.normal import norm_cdf

# Strike grid per expiry kind: (step level, downside fraction, upside fraction) around the spot range.
_GRID: dict[int, tuple[tuple[int, float, float], ...]] = {
    KIND_DAILY: ((0, 0.03, 0.03), (1, 0.08, 0.10)),
    KIND_WEEKLY: ((1, 0.06, 0.08), (2, 0.20, 0.25)),
    KIND_MONTHLY: ((1, 0.12, 0.12), (2, 0.40, 0.50)),
    KIND_QUARTERLY: ((1, 0.06, 0.06), (2, 0.25, 0.35), (3, 0.50, 1.0), (4, 0.70, 2.2)),
}
_KIND_OI = np.array([0.3, 0.6, 1.5, 1.5])  # open-interest scale by kind
_KIND_OI_WIDTH = np.array([0.04, 0.08, 0.2, 0.35])  # OI decay in |ln(K/S_listing)|


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


def day_instruments(und: str, cal: tuple[np.ndarray, ...], t_ms: np.ndarray, mkt: Market,
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
                         float(day_hi[d_list : today + 1].max()), PARAMS[und].strike_fracs)  # fmt: skip
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


def day_frame(und: str, mkt: Market, t_ms: np.ndarray, snaps: np.ndarray, inst: dict[str, np.ndarray],
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
    v_long = PARAMS[und].vol_level ** 2
    kt = 6.0 * t_years
    var = v_long + (mkt.v_now[path] - v_long) * (-np.expm1(-kt) / kt)
    e_exp = 0.015 * ndtri(hash_u01(salt + 1, exp_ms))
    e_snap = 0.002 * ndtri(hash_u01(salt + 2, exp_ms, snap_ms))
    if spec.scenario in TRUTH_SCENARIOS:  # IV / RV_7d is exactly m(t), up to the same noise
        atm = mkt.premium[path] * np.sqrt(mkt.v_now[path]) * (1 + e_exp + e_snap)
    else:
        atm = mkt.premium[path] * np.sqrt(var) * (1 + 0.05 * -np.expm1(-t_years / 0.25)) * (1 + e_exp + e_snap)
    sqrt_t = np.sqrt(t_years)
    z = np.log(k / f) / (atm * sqrt_t)
    slope = mkt.skew_slope[path] + 0.015 * ndtri(hash_u01(salt + 3, exp_ms))
    curv = mkt.skew_curv[path] + 0.008 * ndtri(hash_u01(salt + 4, exp_ms))
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
    oi_base = PARAMS[und].oi_scale * _KIND_OI[inst["kind"][ii]] * np.exp(
        -dist0 / _KIND_OI_WIDTH[inst["kind"][ii]] + ndtri(hash_u01(salt + 5, *ikey))
    )
    age_days = (snap_ms - inst["listed_ms"][ii]) / MS_PER_DAY
    oi = oi_base * np.minimum(1.0, 0.05 + age_days / 7.0) * (hash_u01(salt + 6, *ikey) > 0.08 + 0.4 * itm)
    turnover = 0.15 * np.exp(0.8 * ndtri(hash_u01(salt + 7, *ikey, np.full(n, day))))
    vol_24h = oi * turnover * np.exp(-np.abs(z) / 1.5) * (hash_u01(salt + 8, *ikey, np.full(n, day)) > 0.25)

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

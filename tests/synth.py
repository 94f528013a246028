"""A tiny exact-model harvest for engine tests: market IV = RV_7d x m(band) x skew(z).

Unlike the demo generator (realistic, noisy), this market is built from the
model itself, so a calibration must recover its parameters exactly.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import polars as pl

from calib.data.layout import atomic_write_parquet
from calib.numerics.black76 import black76_price_coin
from calib.numerics.realized_vol import trailing_realized_vol

END = datetime(2026, 3, 1, 0, 0, tzinfo=UTC)


def exact_market(
    root: Path,
    *,
    underlying: str = "BTC",
    m_by_dte: tuple[tuple[float, float, float], ...] = ((0.0, 1000.0, 1.2),),
    anchors: tuple[float, ...] = (-2.0, -1.0, 0.0, 1.0, 2.0),
    ratios: tuple[float, ...] = (1.0, 1.0, 1.0, 1.0, 1.0),
    days: float = 10.0,
    step_minutes: float = 60.0,
    end: datetime = END,
    expiries_days: tuple[float, ...] = (2.0, 5.0, 8.0, 20.0, 60.0),
    n_strikes: int = 9,
    seed: int = 1,
    spot: float = 60000.0,
    vol: float = 0.5,
    width_z: float = 2.5,
    extrapolation: str = "flat",
) -> pl.DataFrame:
    """Write one file per day under `root/<UND>/date=.../` and return the frame.

    Strikes span z = +/- `width_z` at the true multiplier; beyond the outer
    anchors the true skew is flat or (`extrapolation="linear"`) continues the
    outer segments' lines.
    """
    rng = np.random.default_rng(seed)
    n = int(days * 24 * 60 / step_minutes) + 1
    ts = [end - timedelta(minutes=step_minutes * (n - 1 - i)) for i in range(n)]
    dt_years = step_minutes / (365 * 24 * 60)
    index = spot * np.exp(np.cumsum(rng.normal(0, vol * np.sqrt(dt_years), n)))
    ts_s = np.array([t.timestamp() for t in ts])
    rv, _ = trailing_realized_vol(ts_s, index, min_span_seconds=6 * 3600.0)
    rows = []
    for i, t in enumerate(ts):
        if not np.isfinite(rv[i]):
            continue
        for e_days in expiries_days:
            expiry = (t + timedelta(days=e_days)).replace(hour=8, minute=0, second=0, microsecond=0)
            t_years = (expiry - t).total_seconds() / (365 * 86400)
            if t_years <= 0:
                continue
            dte = t_years * 365
            m = next(mm for lo, hi, mm in m_by_dte if lo <= dte < hi)
            fwd = index[i] * np.exp(0.05 * t_years)
            width = width_z * rv[i] * m * np.sqrt(t_years)
            strikes = np.round(fwd * np.exp(np.linspace(-width, width, n_strikes)), -1)
            z = np.log(strikes / fwd) / (rv[i] * m * np.sqrt(t_years))
            iv = rv[i] * m * _true_skew(z, anchors, ratios, extrapolation)
            for cp in ("C", "P"):
                price = black76_price_coin(fwd, strikes, t_years, iv, cp == "C")
                for k, p, v in zip(strikes, price, iv, strict=True):
                    rows.append((t, f"{underlying}-{expiry:%d%b%y}".upper().replace("-0", "-") + f"-{int(k)}-{cp}",
                                 expiry, float(k), cp, float(p), float(v * 100), float(fwd), float(index[i])))
    df = pl.DataFrame(rows, schema={
        "snapshot_ts": pl.Datetime("ms", "UTC"), "instrument_name": pl.String, "expiry_ts": pl.Datetime("ms", "UTC"),
        "strike": pl.Float64, "option_type": pl.String, "mark_price": pl.Float64, "mark_iv": pl.Float64,
        "underlying_price": pl.Float64, "index_price": pl.Float64}, orient="row")
    for (day,), part in df.group_by(pl.col("snapshot_ts").dt.date()):
        atomic_write_parquet(part, root / underlying / f"date={day}" / "synth.parquet")
    return df


def _true_skew(z: np.ndarray, anchors: tuple[float, ...], ratios: tuple[float, ...], extrapolation: str) -> np.ndarray:
    """The market's ratio curve: `np.interp`, and with "linear" the outer lines continued (written out plainly)."""
    out = np.interp(z, anchors, ratios)
    if extrapolation == "linear":
        lo, hi = z < anchors[0], z > anchors[-1]
        s_lo = (ratios[1] - ratios[0]) / (anchors[1] - anchors[0])
        s_hi = (ratios[-1] - ratios[-2]) / (anchors[-1] - anchors[-2])
        out[lo] = ratios[0] + s_lo * (z[lo] - anchors[0])
        out[hi] = ratios[-1] + s_hi * (z[hi] - anchors[-1])
    return out


def run_btc(root: Path, **kw: object):  # type: ignore[no-untyped-def]
    """A harvested BTC calibration of `root`'s 2 days ending at END (0-10 DTE), `kw` into CalibrationConfig."""
    from calib.calibration import run_historical_calibration_from_harvest
    from calib.config import CalibrationConfig, HarvestConfig

    cfg = CalibrationConfig(underlying="BTC", min_dte=0.0, max_dte=10.0, lookback_days=2.0,
                            harvest=HarvestConfig(data_root=root, end_time=END), **kw)  # type: ignore[arg-type]
    return run_historical_calibration_from_harvest(cfg)


def rewrite_files(root: Path, fn) -> None:  # type: ignore[no-untyped-def]
    """Rewrite every BTC harvest file under `root` through `fn(frame) -> frame`."""
    for f in sorted((root / "BTC").rglob("*.parquet")):
        atomic_write_parquet(fn(pl.read_parquet(f)), f)

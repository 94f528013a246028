"""`generate_demo_harvest`: one UTC day at a time, simulated market -> chain -> Parquet snapshots, then the scenario's file pathologies."""

from __future__ import annotations

import itertools
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np

from calib.data.demo.chain import day_frame, day_instruments, expiry_calendar
from calib.data.demo.market import simulate_markets
from calib.data.demo.spec import (
    EPOCH,
    LOOKBACK_DAYS,
    MS_PER_DAY,
    WARMUP_DAYS,
    DemoSpec,
    DemoSummary,
)
from calib.data.layout import atomic_write_parquet, partition_dir, snapshot_path


def _utc_ms(ms: int) -> datetime:
    return EPOCH + timedelta(milliseconds=ms)


def _snapshot_grid(spec: DemoSpec) -> tuple[np.ndarray, np.ndarray, int]:
    """Path grid (ms, warm-up included), indices of the written snapshots, end in ms."""
    end_ms = (spec.end - EPOCH) // timedelta(milliseconds=1)
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
    markets = simulate_markets(t_ms, end_ms, spec.seed, spec.scenario, first_ms=int(t_ms[snaps[0]]))
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
            inst = day_instruments(und, cal, t_ms, mkt, day_lo, day_hi, t_day0,
                                    int(day_snaps[0]), int(day_snaps[-1]) + 1)  # fmt: skip
            df = day_frame(und, mkt, t_ms, day_snaps, inst, spec, int(snap_day[b0]))
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

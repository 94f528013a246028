"""The measurements: the in-process worker, one size, the benchmark over sizes and layouts, the peer
rounds, one day of small files against its compacted file, and implied-vol throughput."""

from __future__ import annotations

import json
import math
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

from calib.bench.common import (
    BENCH_END,
    DEFAULT_CACHE_DIR,
    DEFAULT_SIZES,
    LAYOUTS,
    RV_WARMUP_DAYS,
    STAGES,
    BenchRow,
    ImpliedVolRow,
    PeerRow,
    Progress,
    SmallFilesRow,
    median,
    parse_size,
    size_label,
)
from calib.bench.harvest import ensure_harvest, layout_root
from calib.bench.measure import cli_args, cli_path, create_history, run_measured
from calib.bench.peers import FLOOR_CODE, FLOOR_COLUMNS, window_files


def worker(data_dir: Path, window_days: float, db: Path) -> dict[str, Any]:
    """In a fresh process: the library call behind `calib auto-calibrate` (`calib.auto.auto_calibrate`).

    The same configuration (settings file included), calibration, history write
    and process settings as the command (`python -m calib.bench` applies
    `tune_process` before anything imports numpy), without the CLI framework.
    """
    from calib.auto import auto_calibrate, auto_calibration_config
    from calib.config import load_settings

    config = auto_calibration_config("BTC", data_dir=data_dir, settings=load_settings(), as_of=BENCH_END,
                                     lookback_days=window_days)
    run = auto_calibrate(config, db)
    d = run.result.to_dict()
    dq = d["data_quality"]
    return {
        "exit_code": 3 if d["status"] == "failed" else 0, "status": d["status"], "timings_s": d["timings_s"],
        "rows_scanned": dq["rows_scanned"], "rows_used": dq["rows_used"],
        "engine_path": dq.get("engine_path", "?"), "fit_sample_size": dq.get("fit_sample_size"),
        "calibration_s": run.calibration_s, "store_s": run.store_s,
    }


def bench_size(size: str | float, data_dir: Path, *, cli: bool = True, layout: str = "columns") -> BenchRow:
    """Run one size in a fresh worker process (and, with `cli`, once more as a plain CLI subprocess)."""
    window_days = parse_size(size)
    with tempfile.TemporaryDirectory(prefix="calib-bench-") as tmp:
        for name in ("w.duckdb", "c.duckdb"):
            create_history(Path(tmp) / name)
        spec = json.dumps({"data_dir": str(data_dir), "window_days": window_days, "db": str(Path(tmp) / "w.duckdb")})
        code, out, err, _, rss = run_measured([sys.executable, "-m", "calib.bench", "--worker", spec])
        if code != 0:
            raise RuntimeError(f"bench worker for {size} failed (exit {code}): {err.strip()[-2000:]}")
        w = json.loads(out.strip().splitlines()[-1])
        cli_s = cli_rss = None
        if cli:
            args = [sys.executable, str(cli_path()), *cli_args(data_dir, window_days, Path(tmp) / "c.duckdb")]
            code, _, err, cli_s, cli_rss = run_measured(args)
            if code not in (0, 3):  # 3 = a failed (but recorded) calibration: still a timing
                raise RuntimeError(f"calib auto-calibrate failed (exit {code}): {err.strip()[-2000:]}")
    t = w["timings_s"]
    stages = {name: sum(t.get(k, 0.0) for k in keys) for name, keys in STAGES}
    stages["store"] = w["store_s"]
    calib_s = w["calibration_s"] + w["store_s"]
    return BenchRow(
        size=size_label(size), window_days=window_days, rows_scanned=w["rows_scanned"], rows_used=w["rows_used"],
        engine_path=w["engine_path"], status=w["status"], stages_s=stages, calib_s=calib_s,
        rows_per_s=w["rows_scanned"] / calib_s if calib_s > 0 else 0.0, peak_rss_mb=rss, cli_s=cli_s,
        cli_peak_rss_mb=cli_rss, fit_sample_size=w.get("fit_sample_size"), layout=layout,
    )


def run_benchmark(
    sizes: Sequence[str | float] = DEFAULT_SIZES,
    *,
    cache_dir: Path = DEFAULT_CACHE_DIR,
    max_instruments: int | None = 800,
    step_minutes: float = 5.0,
    warmup_days: float = RV_WARMUP_DAYS,
    cli: bool = True,
    repeat: int = 1,
    layouts: Sequence[str] = ("columns",),
    progress: Progress | None = None,
) -> list[BenchRow]:
    """Benchmark the real auto-calibration on cached demo harvests, one row per size.

    Parameters
    ----------
    sizes : window lengths such as ``"1d"``, ``"14d"``, ``"365d"``, ``"12h"`` or days as numbers.
    cache_dir : where generated harvests are kept (``data/bench``, git-ignored).
    max_instruments : live instruments per snapshot (~800 is BTC on Deribit).
    step_minutes : snapshot spacing.
    warmup_days : days harvested before the window (RV_7d needs 7).
    cli : also time ``calib auto-calibrate`` as a subprocess, end to end.
    repeat : runs per size; the row with the fastest calibration is kept.
    layouts : ``"columns"`` (files carry expiry_ts, strike, option_type) and/or ``"minimal"``
        (the same files without them: `ensure_minimal_layout`); runs alternate between layouts.
    progress : called with one-line status messages.

    Returns
    -------
    One `BenchRow` per size, in the order given.
    """
    if repeat < 1:
        raise ValueError(f"`repeat` must be >= 1; got {repeat}")
    days = {s: parse_size(s) for s in sizes}
    if not days:
        return []
    data_dir = ensure_harvest(Path(cache_dir), max(days.values()) + warmup_days, max_instruments=max_instruments,
                              step_minutes=step_minutes, progress=progress)
    roots = {lay: layout_root(data_dir, lay, progress=progress) for lay in layouts}
    rows = []
    for s in sizes:
        if progress:
            progress(f"benchmarking {size_label(s)} ({repeat} run(s) per layout: {', '.join(layouts)})")
        runs: dict[str, list[BenchRow]] = {lay: [] for lay in layouts}
        for _ in range(repeat):  # layouts alternate, so a change in machine load touches both
            for lay in layouts:
                runs[lay].append(bench_size(s, roots[lay], cli=cli, layout=lay))
        rows += [min(runs[lay], key=lambda r: r.calib_s) for lay in layouts]
    return rows



def bench_peers(
    size: str | float = "14d",
    *,
    cache_dir: Path = DEFAULT_CACHE_DIR,
    rounds: int = 3,
    max_instruments: int | None = 800,
    step_minutes: float = 5.0,
    progress: Progress | None = None,
) -> list[PeerRow]:
    """calib end to end against the floor and the DuckDB peer, per layout, on one window.

    Every run is a fresh process; each round runs, for each layout, `calib
    auto-calibrate`, the floor (`calib.bench.peers.FLOOR_CODE`) and the DuckDB
    peer (`calib.bench.peers.duckdb_peer`), so the load of a shared machine
    touches all of them alike. Times are medians over `rounds`, peak RSS the highest.
    """
    window_days = parse_size(size)
    data_dir = ensure_harvest(Path(cache_dir), window_days + RV_WARMUP_DAYS, max_instruments=max_instruments,
                              step_minutes=step_minutes, progress=progress)
    start = BENCH_END - timedelta(days=window_days)
    seen: dict[str, dict[str, list[float]]] = {lay: {} for lay in LAYOUTS}
    rows_scanned: dict[str, int] = {}
    peer_rows: dict[str, int] = {}
    with tempfile.TemporaryDirectory(prefix="calib-peers-") as tmp:
        for r in range(rounds):
            for lay in LAYOUTS:
                root = layout_root(data_dir, lay, progress=progress)
                if progress:
                    progress(f"peers {size_label(size)} {lay}: round {r + 1} of {rounds}")
                db = Path(tmp) / f"{lay}.duckdb"
                if not db.exists():
                    create_history(db)
                code, out, err, wall, rss = run_measured(
                    [sys.executable, str(cli_path()), *cli_args(root, window_days, db)])
                if code not in (0, 3):
                    raise RuntimeError(f"calib auto-calibrate failed (exit {code}): {err.strip()[-2000:]}")
                rows_scanned[lay] = json.loads(out)["data_quality"]["rows_scanned"]
                files = window_files(root, "BTC", start, BENCH_END)
                code, out, err, fwall, frss = run_measured(
                    [sys.executable, "-c", FLOOR_CODE, json.dumps(files), start.isoformat(), BENCH_END.isoformat(),
                     json.dumps(list(FLOOR_COLUMNS[lay]))])
                if code != 0:
                    raise RuntimeError(f"floor read failed (exit {code}): {err.strip()[-2000:]}")
                spec = json.dumps({"data_dir": str(root), "start": start.isoformat(), "end": BENCH_END.isoformat(),
                                   "db": str(Path(tmp) / f"peer_{lay}.duckdb")})
                code, out, err, dwall, drss = run_measured([sys.executable, "-m", "calib.bench.peers", "duckdb", spec])
                if code != 0:
                    raise RuntimeError(f"DuckDB peer failed (exit {code}): {err.strip()[-2000:]}")
                peer_rows[lay] = json.loads(out.strip().splitlines()[-1])["rows_used"]
                for key, v in (("calib", wall), ("calib_rss", rss), ("floor", fwall), ("floor_rss", frss),
                               ("duckdb", dwall), ("duckdb_rss", drss)):
                    seen[lay].setdefault(key, []).append(v)
    load = os.getloadavg()
    return [PeerRow(layout=lay, size=size_label(size), rows_scanned=rows_scanned[lay], rounds=rounds,
                    # Times are medians of the rounds; a peak is a worst case, so RSS is the highest.
                    calib_e2e_s=median(m["calib"]), calib_rss_mb=max(m["calib_rss"]),
                    floor_s=median(m["floor"]), floor_rss_mb=max(m["floor_rss"]),
                    duckdb_s=median(m["duckdb"]), duckdb_rss_mb=max(m["duckdb_rss"]),
                    duckdb_rows_used=peer_rows[lay], load_avg=(load[0], load[1], load[2]))
            for lay, m in seen.items()]


def bench_small_files(
    cache_dir: Path = DEFAULT_CACHE_DIR,
    *,
    max_instruments: int | None = 800,
    step_minutes: float = 5.0,
    repeat: int = 5,
    progress: Progress | None = None,
) -> SmallFilesRow:
    """Scan one day written as one file per snapshot vs the same day in one file (best of `repeat`).

    The scan is the reader's whole job for the day, as a calibration does it:
    listing and footers, row bound, index series, the quote columns the engine reads.
    """
    from calib.data.reader import find_harvest_files, max_rows, read_index_series, scan_quotes

    roots = {fp: ensure_harvest(Path(cache_dir), 1.0, files_per=fp, max_instruments=max_instruments,
                                step_minutes=step_minutes, exact=True, progress=progress)
             for fp in ("snapshot", "day")}
    start = BENCH_END - timedelta(days=1)
    best: dict[str, float] = {}
    files: dict[str, int] = {}
    rows = 0
    for _ in range(repeat):
        for fp, root in roots.items():
            t0 = time.perf_counter()
            hf = find_harvest_files(root, "BTC", window_start=start, window_end=BENCH_END, warmup=timedelta(0))
            max_rows(hf.quote_files())
            read_index_series(hf)
            q = scan_quotes(hf).collect()
            best[fp] = min(best.get(fp, float("inf")), time.perf_counter() - t0)
            files[fp] = len(hf.files)
            rows = q.height
    return SmallFilesRow(rows=rows, files_snapshot=files["snapshot"], files_compact=files["day"],
                         scan_snapshot_s=best["snapshot"], scan_compact_s=best["day"])


def bench_implied_vol(
    cache_dir: Path = DEFAULT_CACHE_DIR,
    *,
    n_quotes: int = 1_000_000,
    max_instruments: int | None = 800,
    step_minutes: float = 5.0,
    repeat: int = 3,
    progress: Progress | None = None,
) -> ImpliedVolRow:
    """Invert `n_quotes` demo quotes priced exactly (Black-76) at their mark IV; best of `repeat`."""
    import numpy as np
    import polars as pl

    from calib.config import MIN_TICK_COIN
    from calib.numerics.black76 import black76_price_coin
    from calib.numerics.implied_vol import implied_vol

    per_day = 1440.0 / step_minutes * (max_instruments or 1000)
    days = float(math.ceil(n_quotes / per_day)) + 1.0
    root = ensure_harvest(Path(cache_dir), days, max_instruments=max_instruments, step_minutes=step_minutes,
                          progress=progress)
    df = (
        pl.scan_parquet(str(root / "BTC" / "**" / "*.parquet"))
        .select("underlying_price", "strike", "mark_iv", "option_type",
                ((pl.col("expiry_ts") - pl.col("snapshot_ts")).dt.total_microseconds() / (365 * 86400e6))
                .alias("t_years"))
        .filter((pl.col("t_years") > 0) & (pl.col("mark_iv") > 0))
        .head(n_quotes)
        .collect()
    )
    f, k, t = (df[c].to_numpy() for c in ("underlying_price", "strike", "t_years"))
    call = (df["option_type"] == "C").to_numpy()
    sigma = df["mark_iv"].to_numpy() / 100.0
    price = black76_price_coin(f, k, t, sigma, call)
    best = float("inf")
    iv = np.empty(0)
    for _ in range(repeat):
        t0 = time.perf_counter()
        iv, _reason = implied_vol(price, f, k, t, call)
        best = min(best, time.perf_counter() - t0)
    # Above the tick = time value (price - intrinsic) above 0.0001 coin: deep in-the-money quotes whose
    # price equals intrinsic to machine precision carry no volatility at all.
    time_value = price - np.where(call, np.maximum(1.0 - k / f, 0.0), np.maximum(k / f - 1.0, 0.0))
    above = time_value > MIN_TICK_COIN
    finite = above & np.isfinite(iv)
    err = np.abs(iv[finite] - sigma[finite])
    return ImpliedVolRow(
        quotes=int(price.size), seconds=best, quotes_per_s=price.size / best,
        max_abs_err_vol=float(err.max()) if err.size else float("nan"),
        nan_above_tick=int((above & ~np.isfinite(iv)).sum()), nan_total=int((~np.isfinite(iv)).sum()),
        extra={"quotes_above_tick": int(above.sum()),
               "quotes_err_above_1e-8": int((err > 1e-8).sum()),
               "nan_price_above_tick": int(((price > MIN_TICK_COIN) & ~np.isfinite(iv)).sum())},
    )

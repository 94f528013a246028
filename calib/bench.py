"""`python -m calib.bench`: speed and memory of the real auto-calibration, by harvest size.

For each size (a lookback window of 5-minute BTC snapshots, ~800 live
instruments, made by the demo generator and cached under `data/bench/`), a
fresh worker process runs the `calib auto-calibrate --json` command in
process (same code, same allocator settings, recording into a temporary
history file created beforehand, as every run after a trader's first finds
it) and reports the stage timings the result carries, the store
time and its own peak RSS (`wait4` of that process only, so peaks never mix).
Then `calib auto-calibrate` runs once more as a plain subprocess, timed end to
end including interpreter start and imports.

Two extra measurements: one day of 288 per-snapshot files against the same
day compacted into one file (scan time and ratio), and implied-vol
throughput on ~1M quotes (quotes/s, worst round-trip error, NaN count above
the 0.0001 coin tick). Figures depend on the machine and its load: this is a
benchmark to read, not a test to pass.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

DEFAULT_CACHE_DIR = Path("data/bench")
DEFAULT_SIZES: tuple[str, ...] = ("1d", "14d", "90d", "365d")
BENCH_END = datetime(2025, 6, 30, tzinfo=UTC)  # last snapshot of every bench harvest
RV_WARMUP_DAYS = 7.0  # harvested before the window so RV_7d is complete from its first snapshot
STAGES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("scan", ("scan",)),
    ("dq", ("data_quality",)),
    ("rv", ("rv",)),
    ("pricing", ("pricing",)),
    ("fit+skew", ("fit_and_skew",)),  # the skew is solved inside every multiplier evaluation: one stage
    ("bands", ("band_fit",)),
    ("metrics", ("metrics",)),
)
Progress = Callable[[str], None]


@dataclass(frozen=True, slots=True, kw_only=True)
class BenchRow:
    """One harvest size: rows, stage timings (s), throughput and peak memory of one run."""

    size: str
    window_days: float
    rows_scanned: int
    rows_used: int
    engine_path: str
    status: str
    stages_s: dict[str, float]  # STAGES names -> seconds, plus "store"
    calib_s: float  # scan to stored result (library call + record_run)
    rows_per_s: float  # rows scanned / calib_s
    peak_rss_mb: float  # the worker process's high-water mark
    cli_s: float | None = None  # `calib auto-calibrate` as a subprocess, interpreter start included
    cli_peak_rss_mb: float | None = None
    fit_sample_size: int | None = None
    layout: str = "columns"  # "columns": expiry_ts, strike, option_type stored; "minimal": parsed from the name


@dataclass(frozen=True, slots=True, kw_only=True)
class PeerRow:
    """One layout of the peer comparison: medians over interleaved rounds, each run a fresh process."""

    layout: str
    size: str
    rows_scanned: int
    rounds: int
    calib_e2e_s: float  # `calib auto-calibrate` as a subprocess
    calib_rss_mb: float
    floor_s: float  # python + import polars + read and filter the needed columns of the window
    floor_rss_mb: float
    duckdb_s: float  # the DuckDB SQL + scipy minimize_scalar pipeline (calib.bench_peers)
    duckdb_rss_mb: float
    duckdb_rows_used: int
    load_avg: tuple[float, float, float]  # 1/5/15-minute load average when the rounds ended

    @property
    def calib_over_floor(self) -> float:
        return self.calib_e2e_s / self.floor_s

    @property
    def duckdb_over_calib(self) -> float:
        return self.duckdb_s / self.calib_e2e_s


@dataclass(frozen=True, slots=True, kw_only=True)
class SmallFilesRow:
    """Reader scan of one day: per-snapshot files against the compacted file."""

    rows: int
    files_snapshot: int
    files_compact: int
    scan_snapshot_s: float
    scan_compact_s: float

    @property
    def ratio(self) -> float:
        return self.scan_snapshot_s / self.scan_compact_s if self.scan_compact_s > 0 else float("inf")


@dataclass(frozen=True, slots=True, kw_only=True)
class ImpliedVolRow:
    """`calib.numerics.implied_vol` on demo quotes priced exactly at their mark IV."""

    quotes: int
    seconds: float
    quotes_per_s: float
    max_abs_err_vol: float  # worst |IV - true IV| (fraction) over quotes with time value above the tick
    nan_above_tick: int  # no IV although the time value is above 0.0001 coin
    nan_total: int
    extra: dict[str, Any] = field(default_factory=dict)


def parse_size(size: str | float) -> float:
    """'14d' -> 14.0, '12h' -> 0.5, 0.1 -> 0.1 (days)."""
    if isinstance(size, int | float):
        days = float(size)
    else:
        text = size.strip().lower()
        try:
            days = float(text[:-1]) / 24.0 if text.endswith("h") else float(text.removesuffix("d"))
        except ValueError:
            raise ValueError(f"size must look like 1d, 14d, 12h or a number of days; got {size!r}") from None
    if not days > 0:
        raise ValueError(f"size must be positive; got {size!r}")
    return days


def _size_label(size: str | float) -> str:
    if isinstance(size, str) and size.strip()[-1:].lower() in ("d", "h"):
        return size.strip()
    return f"{parse_size(size):g}d"


def ensure_harvest(
    cache_dir: Path,
    days: float,
    *,
    files_per: str = "day",
    max_instruments: int | None = 800,
    step_minutes: float = 5.0,
    seed: int = 7,
    end: datetime = BENCH_END,
    exact: bool = False,
    progress: Progress | None = None,
) -> Path:
    """A demo BTC harvest of at least `days` days ending at `end`, generated once and cached.

    Reuses any cached harvest of the same spec that is at least as long (the
    window reads only its own days), or with `exact` only one of exactly
    `days` (two specs differing only in `files_per` then hold the same rows).
    A marker file is written last, so an interrupted generation is redone.
    """
    from calib.data.demo import DemoSpec, generate_demo_harvest
    from calib.data.layout import PARQUET_COMPRESSION

    cache_dir = Path(cache_dir)
    stem = (f"BTC_step{step_minutes:g}m_n{max_instruments or 'all'}_seed{seed}_{files_per}_{PARQUET_COMPRESSION}"
            f"_end{end:%Y%m%d}")
    best: tuple[float, Path] | None = None
    if cache_dir.is_dir():
        for marker in cache_dir.glob(f"{stem}_*d/.complete.json"):
            have = float(json.loads(marker.read_text())["days"])
            if (abs(have - days) < 1e-9 if exact else have >= days - 1e-9) and (best is None or have < best[0]):
                best = (have, marker.parent)
    if best is not None:
        return best[1]
    root = cache_dir / f"{stem}_{days:g}d"
    if progress:
        progress(f"generating {days:g} days of 5-minute BTC snapshots into {root} (cached for next time)")
    t0 = time.perf_counter()
    spec = DemoSpec(underlyings=("BTC",), end=end, days=days, step_minutes=step_minutes, seed=seed,
                    files_per=files_per, max_instruments=max_instruments)  # type: ignore[arg-type]
    summary = generate_demo_harvest(root, spec)
    (root / ".complete.json").write_text(json.dumps({
        "days": days, "rows": summary.rows, "files": summary.files, "snapshots": summary.snapshots,
        "seconds": round(time.perf_counter() - t0, 1)}))
    return root


MINIMAL_DROPPED: tuple[str, ...] = ("expiry_ts", "strike", "option_type")  # parsed from instrument_name


def ensure_minimal_layout(root: Path, *, progress: Progress | None = None) -> Path:
    """`root`'s harvest rewritten in the minimal layout SPEC section 2 allows, cached next to it.

    Same files, rows and footers (the index series stays in each footer), minus
    `expiry_ts`, `strike` and `option_type`: the reader parses them from
    `instrument_name`. A marker file is written last, so an interrupted copy is redone.
    """
    import polars as pl

    from calib.data.layout import atomic_write_parquet

    root = Path(root)
    out = root.with_name(root.name + "_minimal")
    if (out / ".complete.json").is_file():
        return out
    if progress:
        progress(f"writing the minimal layout of {root.name} into {out} (cached for next time)")
    files = sorted(p for p in root.rglob("*.parquet") if not p.name.startswith("."))
    for path in files:
        frame = pl.read_parquet(path)
        atomic_write_parquet(frame.drop([c for c in MINIMAL_DROPPED if c in frame.columns]),
                             out / path.relative_to(root))
    (out / ".complete.json").write_text(json.dumps({"source": root.name, "files": len(files),
                                                    "dropped": list(MINIMAL_DROPPED)}))
    return out


def _project_root() -> Path:
    """Directory holding the `calib` package (and `cli.py`) this process imported."""
    return Path(__file__).resolve().parent.parent


def _cli_path() -> Path:
    spec = importlib.util.find_spec("cli")
    local = _project_root() / "cli.py"
    if local.is_file():
        return local
    if spec is None or spec.origin is None:
        raise RuntimeError("cannot find cli.py (the calib command line)")
    return Path(spec.origin)


def _child_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(_project_root()), *filter(None, [env.get("PYTHONPATH")])])
    return env


def _run_measured(cmd: list[str], *, timeout: float | None = None) -> tuple[int, str, str, float, float]:
    """Run `cmd`; returns (exit code, stdout, stderr, wall s, peak RSS MB of that process alone).

    The peak is the child's own `VmHWM` (polled from /proc while it runs, once it
    has exec'd): Linux carries the parent's high-water mark into a forked child's
    `ru_maxrss`, so a benchmark process that has loaded data would report its own
    size for every child. `ru_maxrss` is the fallback where /proc is missing.
    """
    argv = "\0".join(cmd).encode() + b"\0"
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, env=_child_env())
        deadline = None if timeout is None else t0 + timeout
        hwm_kb = 0
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            hwm_kb = max(hwm_kb, _vm_hwm_kb(proc.pid, argv))
            if deadline is not None and time.perf_counter() > deadline:
                proc.kill()
                _, status, usage = os.wait4(proc.pid, 0)
                break
            time.sleep(0.005)
        wall = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        return (proc.returncode, out.read().decode(), err.read().decode(), wall,
                (hwm_kb or usage.ru_maxrss) / 1024.0)  # Linux reports KiB


def _vm_hwm_kb(pid: int, argv: bytes) -> int:
    """`VmHWM` of `pid` in KiB once it runs `argv` (0 before its exec, or without /proc)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            if fh.read() != argv:
                return 0
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return 0
    return 0


def _cli_args(data_dir: Path, window_days: float, db: Path) -> list[str]:
    return ["auto-calibrate", "--underlying", "BTC", "--data-dir", str(data_dir),
            "--as-of", BENCH_END.isoformat().replace("+00:00", "Z"), "--lookback-days", f"{window_days:g}",
            "--db", str(db), "--json"]


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


def _create_history(db: Path) -> None:
    """An empty, migrated history file: runs record into an existing file, as every run after a trader's first."""
    from calib.store.connection import connect

    with connect(db, read_only=False):
        pass


def bench_size(size: str | float, data_dir: Path, *, cli: bool = True, layout: str = "columns") -> BenchRow:
    """Run one size in a fresh worker process (and, with `cli`, once more as a plain CLI subprocess)."""
    window_days = parse_size(size)
    with tempfile.TemporaryDirectory(prefix="calib-bench-") as tmp:
        for name in ("w.duckdb", "c.duckdb"):
            _create_history(Path(tmp) / name)
        spec = json.dumps({"data_dir": str(data_dir), "window_days": window_days, "db": str(Path(tmp) / "w.duckdb")})
        code, out, err, _, rss = _run_measured([sys.executable, "-m", "calib.bench", "--worker", spec])
        if code != 0:
            raise RuntimeError(f"bench worker for {size} failed (exit {code}): {err.strip()[-2000:]}")
        w = json.loads(out.strip().splitlines()[-1])
        cli_s = cli_rss = None
        if cli:
            args = [sys.executable, str(_cli_path()), *_cli_args(data_dir, window_days, Path(tmp) / "c.duckdb")]
            code, _, err, cli_s, cli_rss = _run_measured(args)
            if code not in (0, 3):  # 3 = a failed (but recorded) calibration: still a timing
                raise RuntimeError(f"calib auto-calibrate failed (exit {code}): {err.strip()[-2000:]}")
    t = w["timings_s"]
    stages = {name: sum(t.get(k, 0.0) for k in keys) for name, keys in STAGES}
    stages["store"] = w["store_s"]
    calib_s = w["calibration_s"] + w["store_s"]
    return BenchRow(
        size=_size_label(size), window_days=window_days, rows_scanned=w["rows_scanned"], rows_used=w["rows_used"],
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
            progress(f"benchmarking {_size_label(s)} ({repeat} run(s) per layout: {', '.join(layouts)})")
        runs: dict[str, list[BenchRow]] = {lay: [] for lay in layouts}
        for _ in range(repeat):  # layouts alternate, so a change in machine load touches both
            for lay in layouts:
                runs[lay].append(bench_size(s, roots[lay], cli=cli, layout=lay))
        rows += [min(runs[lay], key=lambda r: r.calib_s) for lay in layouts]
    return rows


LAYOUTS: tuple[str, ...] = ("columns", "minimal")


def layout_root(data_dir: Path, layout: str, *, progress: Progress | None = None) -> Path:
    """The harvest in `layout`: `data_dir` itself for "columns", its cached minimal copy for "minimal"."""
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {', '.join(LAYOUTS)}; got {layout!r}")
    return data_dir if layout == "columns" else ensure_minimal_layout(data_dir, progress=progress)


def _median(values: Sequence[float]) -> float:
    v = sorted(values)
    n = len(v)
    return v[n // 2] if n % 2 else (v[n // 2 - 1] + v[n // 2]) / 2.0


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
    auto-calibrate`, the floor (`calib.bench_peers.FLOOR_CODE`) and the DuckDB
    peer (`calib.bench_peers.duckdb_peer`), so the load of a shared machine
    touches all of them alike. Medians over `rounds`.
    """
    from calib.bench_peers import FLOOR_CODE, FLOOR_COLUMNS, window_files

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
                    progress(f"peers {_size_label(size)} {lay}: round {r + 1} of {rounds}")
                db = Path(tmp) / f"{lay}.duckdb"
                if not db.exists():
                    _create_history(db)
                code, out, err, wall, rss = _run_measured(
                    [sys.executable, str(_cli_path()), *_cli_args(root, window_days, db)])
                if code not in (0, 3):
                    raise RuntimeError(f"calib auto-calibrate failed (exit {code}): {err.strip()[-2000:]}")
                rows_scanned[lay] = json.loads(out)["data_quality"]["rows_scanned"]
                files = window_files(root, "BTC", start, BENCH_END)
                code, out, err, fwall, frss = _run_measured(
                    [sys.executable, "-c", FLOOR_CODE, json.dumps(files), start.isoformat(), BENCH_END.isoformat(),
                     json.dumps(list(FLOOR_COLUMNS[lay]))])
                if code != 0:
                    raise RuntimeError(f"floor read failed (exit {code}): {err.strip()[-2000:]}")
                spec = json.dumps({"data_dir": str(root), "start": start.isoformat(), "end": BENCH_END.isoformat(),
                                   "db": str(Path(tmp) / f"peer_{lay}.duckdb")})
                code, out, err, dwall, drss = _run_measured([sys.executable, "-m", "calib.bench_peers", "duckdb", spec])
                if code != 0:
                    raise RuntimeError(f"DuckDB peer failed (exit {code}): {err.strip()[-2000:]}")
                peer_rows[lay] = json.loads(out.strip().splitlines()[-1])["rows_used"]
                for key, v in (("calib", wall), ("calib_rss", rss), ("floor", fwall), ("floor_rss", frss),
                               ("duckdb", dwall), ("duckdb_rss", drss)):
                    seen[lay].setdefault(key, []).append(v)
    load = os.getloadavg()
    return [PeerRow(layout=lay, size=_size_label(size), rows_scanned=rows_scanned[lay], rounds=rounds,
                    calib_e2e_s=_median(m["calib"]), calib_rss_mb=_median(m["calib_rss"]),
                    floor_s=_median(m["floor"]), floor_rss_mb=_median(m["floor_rss"]),
                    duckdb_s=_median(m["duckdb"]), duckdb_rss_mb=_median(m["duckdb_rss"]),
                    duckdb_rows_used=peer_rows[lay], load_avg=(load[0], load[1], load[2]))
            for lay, m in seen.items()]


def format_peers(rows: Sequence[PeerRow]) -> str:
    """The peer table: per layout, calib end to end, the floor and the DuckDB peer with the ratios."""
    head = ["layout", "window", "rows", "calib e2e s", "RSS MB", "floor s", "calib/floor", "DuckDB peer s",
            "RSS MB", "DuckDB/calib"]
    body = [[r.layout, r.size, f"{r.rows_scanned:,}", f"{r.calib_e2e_s:.3f}", f"{r.calib_rss_mb:.0f}",
             f"{r.floor_s:.3f}", f"{r.calib_over_floor:.2f}x", f"{r.duckdb_s:.3f}", f"{r.duckdb_rss_mb:.0f}",
             f"{r.duckdb_over_calib:.2f}x"] for r in rows]
    widths = [max(len(h), *(len(b[i]) for b in body)) for i, h in enumerate(head)]
    lines = ["  ".join(h.rjust(w) for h, w in zip(head, widths, strict=True)),
             "  ".join("-" * w for w in widths)]
    lines += ["  ".join(c.rjust(w) for c, w in zip(b, widths, strict=True)) for b in body]
    if rows:
        la = rows[0].load_avg
        lines.append(f"medians of {rows[0].rounds} interleaved rounds, fresh processes; load average "
                     f"{la[0]:.1f} / {la[1]:.1f} / {la[2]:.1f} (1/5/15 min) at the end")
    return "\n".join(lines)


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


def _fmt_s(v: float | None) -> str:
    return "-" if v is None else f"{v:.3f}"


def format_table(rows: Sequence[BenchRow]) -> str:
    """The benchmark table: one line per size, seconds per stage."""
    head = ["size", "layout", "rows scanned", "rows used", "path", *(n for n, _ in STAGES), "store", "calib s",
            "rows/s", "peak RSS MB", "CLI e2e s"]
    body = [[r.size, r.layout, f"{r.rows_scanned:,}", f"{r.rows_used:,}", r.engine_path,
             *(_fmt_s(r.stages_s.get(n)) for n, _ in STAGES), _fmt_s(r.stages_s.get("store")),
             _fmt_s(r.calib_s), f"{r.rows_per_s / 1e6:.2f}M", f"{r.peak_rss_mb:.0f}", _fmt_s(r.cli_s)]
            for r in rows]
    widths = [max(len(h), *(len(b[i]) for b in body)) for i, h in enumerate(head)]
    lines = ["  ".join(h.rjust(w) for h, w in zip(head, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(c.rjust(w) for c, w in zip(b, widths, strict=True)) for b in body]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m calib.bench [--sizes 1d,14d,90d,365d] [--cache-dir data/bench] ...`."""
    parser = argparse.ArgumentParser(prog="python -m calib.bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default=",".join(DEFAULT_SIZES),
                        help="comma-separated window lengths, e.g. 1d,14d,90d,365d or 12h (default: %(default)s)")
    parser.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE_DIR,
                        help="where generated harvests are cached (default: %(default)s)")
    parser.add_argument("--max-instruments", type=int, default=800, help="live instruments per snapshot")
    parser.add_argument("--repeat", type=int, default=1, help="runs per size; the fastest is shown")
    parser.add_argument("--no-cli", action="store_true", help="skip the end-to-end CLI subprocess timing")
    parser.add_argument("--no-small-files", action="store_true", help="skip the 288-small-files scan comparison")
    parser.add_argument("--no-iv", action="store_true", help="skip the implied-vol throughput measurement")
    parser.add_argument("--layouts", default=",".join(LAYOUTS),
                        help="harvest layouts to run: columns (expiry/strike/type stored), minimal (parsed from "
                             "instrument_name) (default: %(default)s)")
    parser.add_argument("--peers", action="store_true",
                        help="also run the floor (python + polars read of the window) and the DuckDB SQL + "
                             "scipy peer against calib end to end, per layout")
    parser.add_argument("--peer-size", default="14d", help="window of the peer comparison (default: %(default)s)")
    parser.add_argument("--peer-rounds", type=int, default=3, help="interleaved rounds of the peer comparison")
    parser.add_argument("--json", action="store_true", help="print one JSON document instead of tables")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        spec = json.loads(args.worker)
        print(json.dumps(worker(Path(spec["data_dir"]), float(spec["window_days"]), Path(spec["db"])), default=str))
        return 0

    def say(msg: str) -> None:
        print(f"... {msg}", file=sys.stderr, flush=True)

    try:
        sizes = [s for s in args.sizes.split(",") if s.strip()]
        for s in sizes:
            parse_size(s)
        parse_size(args.peer_size)
        layouts = [x.strip() for x in args.layouts.split(",") if x.strip()]
        for lay in layouts:
            if lay not in LAYOUTS:
                raise ValueError(f"layout must be one of {', '.join(LAYOUTS)}; got {lay!r}")
        if args.peer_rounds < 1:
            raise ValueError(f"--peer-rounds must be >= 1; got {args.peer_rounds}")
    except ValueError as e:
        print(f"Error: {e}", file=sys.stderr)
        return 2
    rows = run_benchmark(sizes, cache_dir=args.cache_dir, max_instruments=args.max_instruments,
                         cli=not args.no_cli, repeat=args.repeat, layouts=layouts, progress=say)
    peers = (bench_peers(args.peer_size, cache_dir=args.cache_dir, rounds=args.peer_rounds,
                         max_instruments=args.max_instruments, progress=say) if args.peers else [])
    small = None if args.no_small_files else bench_small_files(args.cache_dir, max_instruments=args.max_instruments,
                                                               progress=say)
    ivr = None if args.no_iv else bench_implied_vol(args.cache_dir, max_instruments=args.max_instruments,
                                                     progress=say)
    if args.json:
        print(json.dumps({"rows": [asdict(r) for r in rows],
                          "peers": [{**asdict(p), "calib_over_floor": p.calib_over_floor,
                                     "duckdb_over_calib": p.duckdb_over_calib} for p in peers],
                          "small_files": asdict(small) if small else None,
                          "implied_vol": asdict(ivr) if ivr else None}, default=str))
        return 0
    print(f"calib bench - {os.cpu_count()} CPU(s), python {sys.version.split()[0]}, "
          f"{datetime.now(UTC):%Y-%m-%d %H:%M}Z; seconds per stage (worker process), "
          "calib = scan to stored result")
    print(format_table(rows))
    if peers:
        print(f"\npeers on the {peers[0].size} window (end to end, each a fresh process; floor = python + import "
              "polars + read and filter the needed columns; DuckDB peer = SQL + scipy minimize_scalar):")
        print(format_peers(peers))
    if small:
        print(f"\nsmall files: 1 day, {small.rows:,} rows: {small.files_snapshot} snapshot files "
              f"{small.scan_snapshot_s:.3f} s vs {small.files_compact} compacted file {small.scan_compact_s:.3f} s "
              f"-> ratio {small.ratio:.2f}x")
    if ivr:
        print(f"implied vol: {ivr.quotes:,} quotes in {ivr.seconds:.3f} s = {ivr.quotes_per_s / 1e6:.2f}M quotes/s; "
              f"time value above the tick: {ivr.extra['quotes_above_tick']:,} quotes, max |IV - true IV| "
              f"{ivr.max_abs_err_vol:.2e} ({ivr.extra['quotes_err_above_1e-8']} above 1e-8), "
              f"NaN {ivr.nan_above_tick}; NaN overall {ivr.nan_total} (price above the tick but no time "
              f"value: {ivr.extra['nan_price_above_tick']})")
    return 0


if __name__ == "__main__":
    from calib.process import tune_process

    tune_process()  # the CLI's allocator settings, so `python -m calib.bench` measures what `calib bench` does
    sys.exit(main())

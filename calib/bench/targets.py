"""Issue 15's targets, judged from what one `calib bench --peers` run measured: value, limit, held or missed.

Nothing here is a recorded figure: every value comes from the run's peer
rows (calib end to end against the floor and the DuckDB peer, per layout),
its size rows (rows/s at 90 and 365 days against 14 days, when those sizes
ran) and its start-up measurement (`bench_startup`: the summed self times of
`python -X importtime` for `calib --help` and for one auto-calibrate run).
A target whose inputs did not run is shown as not run, never as held.
"""

from __future__ import annotations

import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from statistics import median

from calib.bench.common import (
    DEFAULT_CACHE_DIR,
    RV_WARMUP_DAYS,
    BenchRow,
    PeerRow,
    Progress,
    parse_size,
    size_label,
)
from calib.bench.harvest import ensure_harvest, layout_root
from calib.bench.measure import cli_args, cli_path, create_history, import_time_s

# The limits of issue 15 (ratios measured in one run).
MINIMAL_OVER_FLOOR_MAX = 2.0
MINIMAL_RSS_MB_MAX = 450.0
COLUMNS_OVER_FLOOR_MAX = 1.5
DUCKDB_OVER_CALIB_MIN = 4.0
ROWS_PER_S_VS_14D_MIN = 0.8  # "within 20 %" of the 14-day rows/s; faster is no penalty
IMPORT_S_MAX = 0.25
ROWS_PER_S_SIZES: tuple[float, ...] = (90.0, 365.0)  # days, each set against 14
ROWS_PER_S_BASE_DAYS = 14.0


@dataclass(frozen=True, slots=True, kw_only=True)
class StartupRow:
    """Import cost of a fresh process, `python -X importtime` self times summed (s)."""

    help_import_s: float  # `calib --help`
    run_import_s: float  # `calib auto-calibrate ... --json` on the peer window, minimal layout
    window: str
    rounds: int = 1  # fresh processes per command; the value is their median


@dataclass(frozen=True, slots=True, kw_only=True)
class TargetRow:
    """One target: what is measured, its limit and what this run measured (None: not run)."""

    target: str
    op: str  # "<=" or ">="
    limit: float
    unit: str  # "x", "MB", "s"
    measured: float | None
    basis: str  # where the value comes from

    @property
    def held(self) -> bool | None:
        if self.measured is None:
            return None
        return self.measured <= self.limit if self.op == "<=" else self.measured >= self.limit

    @property
    def verdict(self) -> str:
        return {None: "not run", True: "held", False: "missed"}[self.held]


def evaluate_targets(rows: Sequence[BenchRow], peers: Sequence[PeerRow],
                     startup: StartupRow | None) -> list[TargetRow]:
    """Every issue-15 target with this run's value (see the module docstring)."""
    by_layout = {p.layout: p for p in peers}
    out: list[TargetRow] = []

    def peer(layout: str, target: str, op: str, limit: float, unit: str, value: str) -> None:
        p = by_layout.get(layout)
        measured = None
        basis = f"{layout} layout: not run"
        if p is not None:
            measured, what = {
                "over_floor": (p.calib_over_floor, f"calib {p.calib_e2e_s:.3f} s / floor {p.floor_s:.3f} s"),
                "rss": (p.calib_rss_mb, "the calib end-to-end process's peak, highest of the rounds"),
                "duckdb": (p.duckdb_over_calib, f"DuckDB {p.duckdb_s:.3f} s / calib {p.calib_e2e_s:.3f} s"),
            }[value]
            basis = f"{p.size} window, {'' if value == 'rss' else 'median of '}{p.rounds} rounds: {what}"
        out.append(TargetRow(target=target, op=op, limit=limit, unit=unit, measured=measured, basis=basis))

    peer("minimal", "minimal layout: calib end to end / floor", "<=", MINIMAL_OVER_FLOOR_MAX, "x", "over_floor")
    peer("minimal", "minimal layout: calib peak RSS", "<=", MINIMAL_RSS_MB_MAX, "MB", "rss")
    peer("columns", "columns layout: calib end to end / floor", "<=", COLUMNS_OVER_FLOOR_MAX, "x", "over_floor")
    for layout in ("minimal", "columns"):
        peer(layout, f"{layout} layout: DuckDB peer / calib", ">=", DUCKDB_OVER_CALIB_MIN, "x", "duckdb")
    layouts = list(dict.fromkeys(r.layout for r in rows)) or ["columns"]
    for layout in layouts:
        sized = {r.window_days: r for r in rows if r.layout == layout}
        base = sized.get(ROWS_PER_S_BASE_DAYS)
        for days in ROWS_PER_S_SIZES:
            r = sized.get(days)
            label = f"{layout} layout: rows/s at {days:g}d / at {ROWS_PER_S_BASE_DAYS:g}d"
            if r is None or base is None or base.rows_per_s <= 0:
                out.append(TargetRow(target=label, op=">=", limit=ROWS_PER_S_VS_14D_MIN, unit="x", measured=None,
                                     basis=f"needs --sizes {ROWS_PER_S_BASE_DAYS:g}d,{days:g}d"))
                continue
            out.append(TargetRow(
                target=label, op=">=", limit=ROWS_PER_S_VS_14D_MIN, unit="x", measured=r.rows_per_s / base.rows_per_s,
                basis=f"{r.rows_per_s / 1e6:.2f}M vs {base.rows_per_s / 1e6:.2f}M rows/s ({r.engine_path} vs "
                      f"{base.engine_path})"))
    for name, attr, what in (("calib --help", "help_import_s", "cli.py --help"),
                             ("auto-calibrate run", "run_import_s", "cli.py auto-calibrate")):
        measured = None if startup is None else float(getattr(startup, attr))
        basis = ("not run" if startup is None else
                 f"python -X importtime {what}{'' if attr == 'help_import_s' else f' ({startup.window} minimal)'}, "
                 f"self times summed, median of {startup.rounds}")
        out.append(TargetRow(target=f"{name}: import time", op="<=", limit=IMPORT_S_MAX, unit="s",
                             measured=measured, basis=basis))
    return out


def bench_startup(
    size: str | float = "14d",
    *,
    cache_dir: Path = DEFAULT_CACHE_DIR,
    max_instruments: int | None = 800,
    step_minutes: float = 5.0,
    rounds: int = 3,
    progress: Progress | None = None,
) -> StartupRow:
    """Import cost of `calib --help` and of an auto-calibrate run (the peer window, minimal layout):
    the median of `rounds` fresh processes each, interleaved."""
    window_days = parse_size(size)
    data_dir = ensure_harvest(Path(cache_dir), window_days + RV_WARMUP_DAYS, max_instruments=max_instruments,
                              step_minutes=step_minutes, progress=progress)
    root = layout_root(data_dir, "minimal", progress=progress)
    if progress:
        progress("start-up: python -X importtime for --help and one run")
    help_cmd = [sys.executable, str(cli_path()), "--help"]
    helps, runs = [], []
    with tempfile.TemporaryDirectory(prefix="calib-startup-") as tmp:
        db = Path(tmp) / "s.duckdb"
        create_history(db)
        run_cmd = [sys.executable, str(cli_path()), *cli_args(root, window_days, db)]
        for _ in range(rounds):  # interleaved: one noisy moment does not decide a verdict
            helps.append(import_time_s(help_cmd))
            runs.append(import_time_s(run_cmd, ok_codes=(0, 3)))
    return StartupRow(help_import_s=median(helps), run_import_s=median(runs), window=size_label(size),
                      rounds=rounds)


def _fmt(v: float | None, unit: str) -> str:
    if v is None:
        return "-"
    return f"{v:.2f}x" if unit == "x" else f"{v:.0f} MB" if unit == "MB" else f"{v:.3f} s"


def format_targets(targets: Sequence[TargetRow]) -> str:
    """The targets block: target, limit, measured, held / missed / not run, and where the value comes from."""
    head = ["target", "limit", "measured", "verdict", "from"]
    body = [[t.target, f"{t.op} {_fmt(t.limit, t.unit)}", _fmt(t.measured, t.unit), t.verdict, t.basis]
            for t in targets]
    widths = [max(len(h), *(len(b[i]) for b in body)) for i, h in enumerate(head)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(head, widths, strict=True)).rstrip(),
             "  ".join("-" * w for w in widths)]
    lines += ["  ".join(c.ljust(w) for c, w in zip(b, widths, strict=True)).rstrip() for b in body]
    held = sum(t.held is True for t in targets)
    missed = sum(t.held is False for t in targets)
    lines.append(f"{held} held, {missed} missed, {len(targets) - held - missed} not run")
    return "\n".join(lines)


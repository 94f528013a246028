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

The package, by job: `common` (sizes, stage names, result rows), `harvest` (the
cached demo harvests and their layouts), `measure` (fresh processes, wall time and
peak RSS), `run` (the worker, the size runs, the peer rounds, the small-files and
implied-vol measurements), `peers` (the floor and the DuckDB peer calib is set
against: `python -m calib.bench.peers duckdb SPEC`), `targets` (issue 15's targets judged from a run's
figures, and the start-up import times they need), `format` (the tables) and
`command` (`main`: the flags of `python -m calib.bench` and `calib bench`).
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from calib.bench.command import main
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
        parse_size,
    )
    from calib.bench.format import format_peers, format_table
    from calib.bench.harvest import (
        MINIMAL_DROPPED,
        ensure_harvest,
        ensure_minimal_layout,
        layout_root,
    )
    from calib.bench.measure import run_measured
    from calib.bench.run import (
        bench_implied_vol,
        bench_peers,
        bench_size,
        bench_small_files,
        run_benchmark,
        worker,
    )
    from calib.bench.targets import (
        StartupRow,
        TargetRow,
        bench_startup,
        evaluate_targets,
        format_targets,
    )

# Each public name -> its module, imported on first use: `python -m calib.bench.peers` (a measured
# peer process) then loads the peer alone, not the whole benchmark.
_HOMES: dict[str, str] = {
    "BENCH_END": "common",
    "BenchRow": "common",
    "DEFAULT_CACHE_DIR": "common",
    "DEFAULT_SIZES": "common",
    "ImpliedVolRow": "common",
    "LAYOUTS": "common",
    "MINIMAL_DROPPED": "harvest",
    "PeerRow": "common",
    "Progress": "common",
    "RV_WARMUP_DAYS": "common",
    "STAGES": "common",
    "SmallFilesRow": "common",
    "StartupRow": "targets",
    "TargetRow": "targets",
    "bench_implied_vol": "run",
    "bench_peers": "run",
    "bench_size": "run",
    "bench_small_files": "run",
    "bench_startup": "targets",
    "ensure_harvest": "harvest",
    "ensure_minimal_layout": "harvest",
    "evaluate_targets": "targets",
    "format_peers": "format",
    "format_table": "format",
    "format_targets": "targets",
    "layout_root": "harvest",
    "main": "command",
    "parse_size": "common",
    "run_benchmark": "run",
    "run_measured": "measure",
    "worker": "run",
}
__all__ = [
    "BENCH_END",
    "DEFAULT_CACHE_DIR",
    "DEFAULT_SIZES",
    "LAYOUTS",
    "MINIMAL_DROPPED",
    "RV_WARMUP_DAYS",
    "STAGES",
    "BenchRow",
    "ImpliedVolRow",
    "PeerRow",
    "Progress",
    "SmallFilesRow",
    "StartupRow",
    "TargetRow",
    "bench_implied_vol",
    "bench_peers",
    "bench_size",
    "bench_small_files",
    "bench_startup",
    "ensure_harvest",
    "ensure_minimal_layout",
    "evaluate_targets",
    "format_peers",
    "format_table",
    "format_targets",
    "layout_root",
    "main",
    "parse_size",
    "run_benchmark",
    "run_measured",
    "worker",
]


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'calib.bench' has no attribute {name!r}")
    return getattr(import_module(f"calib.bench.{home}"), name)

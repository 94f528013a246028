"""What every part of the benchmark shares: the bench harvest's spec, stage names, sizes and result rows."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
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

LAYOUTS: tuple[str, ...] = ("columns", "minimal")


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
    duckdb_s: float  # the DuckDB SQL + scipy minimize_scalar pipeline (calib.bench.peers)
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




def size_label(size: str | float) -> str:
    """The label a size is shown with: as typed when it has a unit, else days (``0.5`` -> ``0.5d``)."""
    if isinstance(size, str) and size.strip()[-1:].lower() in ("d", "h"):
        return size.strip()
    return f"{parse_size(size):g}d"



def median(values: Sequence[float]) -> float:
    v = sorted(values)
    n = len(v)
    return v[n // 2] if n % 2 else (v[n // 2 - 1] + v[n // 2]) / 2.0

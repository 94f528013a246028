"""Calibration results on the bundled data and a benchmark-spec harvest, flattened to numbers and strings.

`python tests/golden_results.py OUT.json` records them with whichever `calib` is
first on PYTHONPATH: `tests/data/golden_results.json` was recorded this way at
commit d24169b (before the speed work of issue 15) and re-recorded at 5f39d5f (the
merged state before issue 14's restructuring: issue 12's exact-optimum fits and
issue 17's surface sections had changed and extended the results since), and `tests/test_name_parsing.py`
checks that today's code gives the same within 1e-9 relative, in the full and the
minimal layout (expiry_ts, strike, option_type parsed from instrument_name), in
memory and chunked.
"""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

BUNDLE = Path(__file__).resolve().parents[1] / "data" / "live_deribit"
BUNDLE_END = datetime(2026, 11, 20, tzinfo=UTC)
BENCH_END = datetime(2025, 6, 30, tzinfo=UTC)
# Run-specific fields: never equal between two runs.
VOLATILE = ("run_id", "created_at", "timings_s", "data_root", "skipped_files")


def bench_spec_harvest(root: Path) -> Path:
    """9 days of the benchmark's harvest spec (5-minute BTC, 800 instruments, seed 7): a 2-day window + RV warm-up."""
    from calib.data.demo import DemoSpec, generate_demo_harvest

    if not (root / "BTC").is_dir():
        generate_demo_harvest(root, DemoSpec(underlyings=("BTC",), end=BENCH_END, days=9, step_minutes=5,
                                             seed=7, max_instruments=800))
    return root


def cases(bench_root: Path) -> list[tuple[str, Path, str, datetime, float]]:
    """(name, data root, underlying, as-of, lookback days)."""
    return [
        ("bundle_BTC", BUNDLE, "BTC", BUNDLE_END, 14.0),
        ("bundle_ETH", BUNDLE, "ETH", BUNDLE_END, 14.0),
        ("bench_BTC_2d", bench_root, "BTC", BENCH_END, 2.0),
    ]


def flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    """Nested result dict -> {dotted path: number | string | None}, run-specific fields left out."""
    out: dict[str, Any] = {}
    if isinstance(d, dict):
        for k, v in d.items():
            if k not in VOLATILE:
                out.update(flatten(v, f"{prefix}{k}."))
    elif isinstance(d, list | tuple):
        for i, v in enumerate(d):
            out.update(flatten(v, f"{prefix}{i}."))
    else:
        out[prefix.rstrip(".")] = d if d is None or isinstance(d, bool | int | float | str) else str(d)
    return out


def run_case(root: Path, underlying: str, end: datetime, lookback_days: float, *,
             chunk_threshold_rows: int | None = None) -> dict[str, Any]:
    from calib.calibration import run_historical_calibration_from_harvest
    from calib.config import CalibrationConfig, HarvestConfig

    cfg = CalibrationConfig(underlying=underlying, source="harvested", lookback_days=lookback_days,
                            multiplier_tested=1.0, harvest=HarvestConfig(data_root=root, end_time=end))
    result = run_historical_calibration_from_harvest(cfg, chunk_threshold_rows=chunk_threshold_rows)
    return flatten(json.loads(json.dumps(result.to_dict(), default=str)))


def record(out: Path, bench_root: Path) -> None:
    golden = {}
    for name, root, und, end, days in cases(bench_spec_harvest(bench_root)):
        golden[name] = run_case(root, und, end, days)
        golden[name + "_chunked"] = run_case(root, und, end, days, chunk_threshold_rows=1)
    out.write_text(json.dumps(golden, indent=1, sort_keys=True) + "\n")


if __name__ == "__main__":
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        record(Path(sys.argv[1]), Path(tmp) / "bench")

"""A writer process for the concurrency test: repeated live runs (each applied) and auto-calibrations.

    python -m tests.agent_writer --db F --market-a A --market-b B --runs N

Alternates live runs on two markets (so the applied multiplier changes every
time) with auto-calibrations, all recorded in F by the library calls the CLI
makes, and prints one JSON line: runs recorded, failures (with messages), seconds.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from calib.calibration import run_historical_calibration_from_harvest
from calib.config import CalibrationConfig, HarvestConfig, PolicyConfig, SkewConfig
from calib.errors import CalibError
from calib.live import calibrate_live_and_record
from calib.store.history import record_run
from tests.synth import END

FLAT = SkewConfig(anchors_z=(-2.0, -1.0, 0.0, 1.0, 2.0), current_ratios=(1.0,) * 5)
# Every live run applies: no cooldown, deadband or step limit, no smoothing.
APPLY_ALL = PolicyConfig(min_samples=10, cooldown_minutes=0, deadband=0.0, max_step=1.0, ewma_alpha=1.0)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--db", type=Path, required=True)
    p.add_argument("--market-a", type=Path, required=True)
    p.add_argument("--market-b", type=Path, required=True)
    p.add_argument("--runs", type=int, default=20)
    args = p.parse_args(argv)
    recorded, failures = 0, []
    t0 = time.perf_counter()
    for i in range(args.runs):
        root = args.market_a if i % 2 == 0 else args.market_b
        try:
            if i % 3 == 2:
                cfg = CalibrationConfig(underlying="BTC", source="harvested", min_dte=0.0, max_dte=10.0,
                                        lookback_days=2.0, skew=FLAT, multiplier_tested=1.0,
                                        harvest=HarvestConfig(data_root=root, end_time=END))
                record_run(args.db, run_historical_calibration_from_harvest(cfg))
            else:
                cfg = CalibrationConfig(underlying="BTC", source="live", min_dte=0.0, max_dte=10.0, replay=True,
                                        skew=FLAT, harvest=HarvestConfig(data_root=root))
                calibrate_live_and_record(cfg, args.db, APPLY_ALL)
            recorded += 1
        except CalibError as e:
            failures.append(f"{type(e).__name__}: {e}")
    print(json.dumps({"runs": args.runs, "recorded": recorded, "failures": failures,
                      "elapsed_s": time.perf_counter() - t0}))
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

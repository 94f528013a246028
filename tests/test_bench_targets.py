"""`calib bench --peers` judges issue 15's targets from the figures it measured (tiny sizes: no timing claims)."""

from __future__ import annotations

import json
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from calib.bench import BenchRow, PeerRow, StartupRow, evaluate_targets, format_targets, main
from calib.bench.measure import import_time_s


def _peer(layout: str, *, calib: float, floor: float = 0.5, duckdb: float = 6.0, rss: float = 400.0) -> PeerRow:
    return PeerRow(layout=layout, size="14d", rows_scanned=1000, rounds=3, calib_e2e_s=calib, calib_rss_mb=rss,
                   floor_s=floor, floor_rss_mb=100.0, duckdb_s=duckdb, duckdb_rss_mb=500.0, duckdb_rows_used=10,
                   load_avg=(1.0, 1.0, 1.0))


def _row(days: float, rows_per_s: float, layout: str = "columns") -> BenchRow:
    return BenchRow(size=f"{days:g}d", window_days=days, rows_scanned=100, rows_used=90, engine_path="in_memory",
                    status="ok", stages_s={}, calib_s=1.0, rows_per_s=rows_per_s, peak_rss_mb=300.0, layout=layout)


def _by_target(targets: list) -> dict:  # type: ignore[type-arg]
    return {t.target: t for t in targets}


def test_each_target_is_judged_from_the_measured_figures() -> None:
    peers = [_peer("columns", calib=0.70), _peer("minimal", calib=1.10, rss=460.0)]
    rows = [_row(14, 6.0e6), _row(90, 5.0e6), _row(365, 4.0e6)]
    got = _by_target(evaluate_targets(rows, peers, StartupRow(help_import_s=0.06, run_import_s=0.31, window="14d")))
    assert got["minimal layout: calib end to end / floor"].measured == pytest.approx(2.2)
    assert got["minimal layout: calib end to end / floor"].verdict == "missed"
    assert got["minimal layout: calib peak RSS"].verdict == "missed"  # 460 MB > 450 MB
    assert got["columns layout: calib end to end / floor"].measured == pytest.approx(1.4)
    assert got["columns layout: calib end to end / floor"].verdict == "held"
    assert got["columns layout: DuckDB peer / calib"].measured == pytest.approx(6.0 / 0.7)
    assert got["columns layout: DuckDB peer / calib"].verdict == "held"
    assert got["minimal layout: DuckDB peer / calib"].verdict == "held"  # 5.45x
    assert got["columns layout: rows/s at 90d / at 14d"].measured == pytest.approx(5 / 6)
    assert got["columns layout: rows/s at 90d / at 14d"].verdict == "held"
    assert got["columns layout: rows/s at 365d / at 14d"].verdict == "missed"  # 0.67 < 0.8
    assert got["calib --help: import time"].verdict == "held"
    assert got["auto-calibrate run: import time"].verdict == "missed"


def test_the_verdict_follows_the_numbers() -> None:
    slow = _by_target(evaluate_targets([], [_peer("minimal", calib=1.5, duckdb=3.0)], None))
    fast = _by_target(evaluate_targets([], [_peer("minimal", calib=0.9, duckdb=4.0)], None))
    key = "minimal layout: DuckDB peer / calib"
    assert (slow[key].measured, slow[key].held) == (pytest.approx(2.0), False)
    assert (fast[key].measured, fast[key].held) == (pytest.approx(4.0 / 0.9), True)
    assert slow["minimal layout: calib end to end / floor"].held is False  # 3.0x
    assert fast["minimal layout: calib end to end / floor"].held is True  # 1.8x


def test_targets_without_their_figures_are_not_run_never_held() -> None:
    got = evaluate_targets([_row(14, 6.0e6), _row(1, 1.0e6)], [_peer("columns", calib=0.6)], None)
    by = _by_target(got)
    assert by["minimal layout: calib end to end / floor"].held is None
    assert by["columns layout: rows/s at 90d / at 14d"].verdict == "not run"
    assert by["calib --help: import time"].verdict == "not run"
    assert by["columns layout: calib end to end / floor"].held is True
    text = format_targets(got)
    assert "not run" in text and "held" in text and text.splitlines()[-1].endswith("not run")
    # a faster large window is no penalty
    faster = _by_target(evaluate_targets([_row(14, 5.0e6), replace(_row(90, 6.5e6))], [], None))
    assert faster["columns layout: rows/s at 90d / at 14d"].held is True


def test_import_time_sums_the_self_times_of_a_fresh_process() -> None:
    bare = import_time_s([sys.executable, "-c", "pass"])
    # A set of modules that costs far more than start-up's own noise (a few ms under load).
    more = import_time_s([sys.executable, "-c", "import asyncio, unittest, decimal, email.parser, http.server, "
                                                "xml.etree.ElementTree, json, argparse, logging"])
    assert 0 < bare < more < 5
    with pytest.raises(RuntimeError, match="exit 3"):
        import_time_s([sys.executable, "-c", "raise SystemExit(3)"])


def test_main_with_peers_prints_the_targets_block_and_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["--sizes", "0.1d", "--cache-dir", str(tmp_path), "--max-instruments", "30", "--no-cli", "--no-small-files",
            "--no-iv", "--peers", "--peer-size", "0.1d", "--peer-rounds", "1"]
    assert main([*args, "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    targets = {t["target"]: t for t in doc["targets"]}
    assert targets["minimal layout: calib end to end / floor"]["measured"] == pytest.approx(
        next(p for p in doc["peers"] if p["layout"] == "minimal")["calib_over_floor"])
    assert targets["calib --help: import time"]["measured"] == pytest.approx(doc["startup"]["help_import_s"])
    assert doc["startup"]["run_import_s"] > 0
    assert doc["startup"]["rounds"] == 1  # --peer-rounds
    assert targets["columns layout: rows/s at 90d / at 14d"]["held"] is None  # sizes not run
    assert {t["verdict"] for t in doc["targets"]} <= {"held", "missed", "not run"}
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "targets (issue 15" in out and "calib/floor" in out and "DuckDB/calib" in out

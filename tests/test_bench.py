"""`python -m calib.bench` keeps working (tiny sizes; no timing assertions: it is a benchmark)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from calib.bench import (
    STAGES,
    BenchRow,
    bench_implied_vol,
    bench_small_files,
    ensure_harvest,
    format_table,
    main,
    parse_size,
    run_benchmark,
)

TINY = {"max_instruments": 40, "step_minutes": 30.0}


def test_run_benchmark_on_a_tiny_harvest(tmp_path: Path) -> None:
    rows = run_benchmark(["0.1d"], cache_dir=tmp_path, warmup_days=2.0, **TINY)
    (row,) = rows
    assert isinstance(row, BenchRow)
    assert row.size == "0.1d"
    assert row.engine_path == "in_memory"
    assert row.rows_scanned > 0 and 0 < row.rows_used <= row.rows_scanned
    assert row.status in ("ok", "degraded", "failed")
    assert set(row.stages_s) == {name for name, _ in STAGES} | {"store"}
    assert all(v >= 0 for v in row.stages_s.values())
    assert row.calib_s > 0 and row.rows_per_s > 0
    assert row.peak_rss_mb > 50  # the worker's own high-water mark (python + numpy + polars at least)
    assert row.cli_s is not None and row.cli_s > 0
    table = format_table(rows)
    assert "rows scanned" in table and "0.1d" in table and "in_memory" in table
    # The generated harvest is cached: a second request reuses it, and a shorter one too.
    marker = next(tmp_path.glob("*/.complete.json"))
    assert ensure_harvest(tmp_path, 1.0, **TINY) == marker.parent


def test_small_files_and_implied_vol(tmp_path: Path) -> None:
    small = bench_small_files(tmp_path, repeat=1, **TINY)
    assert small.files_snapshot == 48 + 1 and small.files_compact == 2  # 1 day of 30-min snapshots, 2 dates
    assert small.rows > 0 and small.scan_snapshot_s > 0 and small.scan_compact_s > 0
    assert math.isfinite(small.ratio)
    iv = bench_implied_vol(tmp_path, n_quotes=5_000, repeat=1, **TINY)
    assert iv.quotes == 5_000
    assert iv.nan_above_tick == 0
    assert iv.max_abs_err_vol < 1e-6  # the target (1e-8) is measured by the benchmark, not asserted


def test_main_prints_tables_and_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--sizes", "0.05d", "--cache-dir", str(tmp_path), "--max-instruments", "30",
                 "--no-cli", "--no-small-files", "--no-iv", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["rows"][0]["size"] == "0.05d" and out["rows"][0]["cli_s"] is None
    assert main(["--sizes", "0.05d", "--cache-dir", str(tmp_path), "--max-instruments", "30", "--no-cli",
                 "--no-small-files", "--no-iv"]) == 0
    assert "peak RSS MB" in capsys.readouterr().out
    assert main(["--sizes", "two weeks"]) == 2
    assert "size must look like" in capsys.readouterr().err


@pytest.mark.parametrize(("text", "days"), [("14d", 14.0), ("12h", 0.5), ("0.1", 0.1), (365, 365.0)])
def test_parse_size(text: str | float, days: float) -> None:
    assert parse_size(text) == days
    with pytest.raises(ValueError, match="must be positive"):
        parse_size("0d")


def test_compile_bytecode_writes_what_a_first_run_leaves(tmp_path: Path) -> None:
    import importlib.util

    from calib.bench.measure import compile_bytecode

    (tmp_path / "calib").mkdir()
    src = tmp_path / "calib" / "mod.py"
    src.write_text("X = 1\n")
    (tmp_path / "cli.py").write_text("Y = 2\n")
    assert compile_bytecode(tmp_path) == 0
    assert Path(importlib.util.cache_from_source(str(src))).is_file()
    assert Path(importlib.util.cache_from_source(str(tmp_path / "cli.py"))).is_file()
    (tmp_path / "calib" / "bad.py").write_text("def (\n")
    assert compile_bytecode(tmp_path) == 1  # a source that does not compile is reported, not hidden

"""`calib bench --peers`: both layouts, the floor and the DuckDB peer in one table, each a fresh process."""

from __future__ import annotations

import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import polars as pl
import pytest

from calib.bench import (
    BENCH_END,
    bench_peers,
    ensure_harvest,
    ensure_minimal_layout,
    format_peers,
    main,
    run_benchmark,
    run_measured,
)
from calib.bench.peers import duckdb_peer, window_files

TINY = {"max_instruments": 40, "step_minutes": 30.0}


def test_minimal_layout_drops_only_the_parsed_columns(tmp_path: Path) -> None:
    root = ensure_harvest(tmp_path, 1.0, **TINY)
    minimal = ensure_minimal_layout(root)
    a, b = sorted(root.rglob("*.parquet")), sorted(minimal.rglob("*.parquet"))
    assert [p.relative_to(root) for p in a] == [p.relative_to(minimal) for p in b]
    full = pl.read_parquet(a[0])
    assert pl.read_parquet(b[0]).equals(full.drop("expiry_ts", "strike", "option_type"))
    assert ensure_minimal_layout(root) == minimal  # cached


def test_duckdb_peer_fits_the_demo_multiplier_in_both_layouts(tmp_path: Path) -> None:
    root = ensure_harvest(tmp_path, 9.0, **TINY)
    start = BENCH_END - timedelta(days=2)
    got = {lay: duckdb_peer(r, "BTC", start, BENCH_END, tmp_path / f"{lay}.duckdb")
           for lay, r in (("columns", root), ("minimal", ensure_minimal_layout(root)))}
    assert got["columns"]["rows_used"] == got["minimal"]["rows_used"] > 0
    m = got["columns"]["scores"]["recommended"]["multiplier"]
    assert m == pytest.approx(got["minimal"]["scores"]["recommended"]["multiplier"], rel=1e-9)
    assert 0.8 < m < 1.6  # the demo market prices near RV x ~1.2; the peer has no skew
    rec, tested = got["columns"]["scores"]["recommended"], got["columns"]["scores"]["tested"]
    assert rec["vega_weighted_mae_pct"] <= tested["vega_weighted_mae_pct"]
    assert len(window_files(root, "BTC", start, BENCH_END)) == 3


def test_peers_table_has_both_layouts_floor_and_duckdb(tmp_path: Path) -> None:
    rows = bench_peers("0.5d", cache_dir=tmp_path, rounds=1, **TINY)
    assert [r.layout for r in rows] == ["columns", "minimal"]
    for r in rows:
        assert r.rows_scanned > 0 and r.duckdb_rows_used > 0
        assert r.calib_e2e_s > 0 and r.floor_s > 0 and r.duckdb_s > 0
        assert 5 < r.floor_rss_mb < r.calib_rss_mb  # each process's own peak, not the parent's
    table = format_peers(rows)
    assert "calib/floor" in table and "DuckDB/calib" in table and "minimal" in table


def test_run_benchmark_runs_both_layouts_with_the_same_rows(tmp_path: Path) -> None:
    rows = run_benchmark(["0.1d"], cache_dir=tmp_path, warmup_days=2.0, cli=False,
                         layouts=("columns", "minimal"), **TINY)
    assert [r.layout for r in rows] == ["columns", "minimal"]
    assert rows[0].rows_scanned == rows[1].rows_scanned and rows[0].rows_used == rows[1].rows_used


def test_main_rejects_an_unknown_layout(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--sizes", "1d", "--layouts", "parquet", "--cache-dir", str(tmp_path)]) == 2
    assert "layout must be one of" in capsys.readouterr().err


def test_child_peak_rss_is_its_own() -> None:
    ballast = bytearray(300 * 1024 * 1024)  # a big parent: its size must not show up in the child's peak
    ballast[::4096] = b"x" * len(ballast[::4096])
    *_, rss = run_measured([sys.executable, "-c", "import time; time.sleep(0.3)"])
    assert rss < 100
    del ballast


def test_cli_bench_passes_peers_through(tmp_path: Path) -> None:
    root = Path(__file__).resolve().parents[1]
    proc = subprocess.run([sys.executable, str(root / "cli.py"), "bench", "--help"], capture_output=True, text=True,
                          cwd=root, timeout=60)
    assert proc.returncode == 0
    assert "--peers" in proc.stdout and "--layouts" in proc.stdout



def test_the_peer_process_loads_the_peer_alone() -> None:
    """`python -m calib.bench.peers` is timed against calib: the package must not load the whole benchmark with it."""
    code = ("import sys; import calib.bench.peers; "
            "print(sorted(m for m in sys.modules if m.startswith('calib.bench')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "['calib.bench', 'calib.bench.peers']"


def test_every_public_bench_name_resolves() -> None:
    import calib.bench

    assert sorted(calib.bench.__all__) == sorted(calib.bench._HOMES)
    assert all(getattr(calib.bench, name) is not None for name in calib.bench.__all__)

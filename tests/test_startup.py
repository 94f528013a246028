"""Start-up cost: each command imports what it needs when it needs it (`python -X importtime`)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from calib.numerics.stats import quantiles
from tests.synth import END

ROOT = Path(__file__).resolve().parents[1]
_LINE = re.compile(r"^import time:\s+\d+ \|\s+(\d+) \| (\s*)(\S+)$")


def _imports(args: list[str], codes: tuple[int, ...] = (0, 3)) -> tuple[set[str], float]:
    """Modules a fresh `python -X importtime ARGS` imported, and their total import time in seconds."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run([sys.executable, "-X", "importtime", *args], capture_output=True, text=True, env=env,
                          cwd=ROOT, timeout=120)
    assert proc.returncode in codes, proc.stderr[-2000:]
    mods: set[str] = set()
    total_us = 0
    for line in proc.stderr.splitlines():
        m = _LINE.match(line)
        if m:
            mods.add(m.group(3))
            if not m.group(2):  # top level: its cumulative time includes everything below it
                total_us += int(m.group(1))
    return mods, total_us / 1e6


def _top(mods: set[str]) -> set[str]:
    return {m.split(".")[0] for m in mods}


HEAVY = {"numpy", "polars", "duckdb", "pyarrow", "httpx", "rich", "pydantic", "scipy"}


def test_help_imports_no_numerics_store_network_or_rich() -> None:
    mods, _ = _imports(["cli.py", "--help"])
    assert not _top(mods) & HEAVY
    mods, _ = _imports(["cli.py", "auto-calibrate", "--help"])
    # typer 0.29 coerces every parameter through a pydantic TypeAdapter (the group's own --help
    # flag included), so any subcommand loads pydantic; the command's modules still stay out.
    assert not _top(mods) & (HEAVY - {"pydantic"})


@pytest.mark.parametrize("args", [
    ["state", "-u", "BTC", "--db", "{tmp}/missing.duckdb"],
    ["history", "--db", "{tmp}/missing.duckdb"],
    ["sql", "SELECT 1", "--db", "{tmp}/missing.duckdb"],
    ["apply", "-u", "BTC", "--db", "{tmp}/missing.duckdb"],
    ["auto-calibrate", "-u", "BTC", "--data-dir", "{tmp}/no_harvest", "--db", "{tmp}/h.duckdb"],
    ["auto-calibrate", "-u", "BTC", "--as-of", "not-a-time", "--db", "{tmp}/h.duckdb"],
    ["calibrate-live", "-u", "BTC", "--replay", "{tmp}/no_harvest", "--db", "{tmp}/h.duckdb"],
])
def test_a_refused_command_loads_no_engine_or_store(args: list[str], tmp_path: Path) -> None:
    """A usage error (exit 2) is found before the command imports what its work needs."""
    mods, _ = _imports(["cli.py", *(a.format(tmp=tmp_path) for a in args)], codes=(2,))
    assert not _top(mods) & (HEAVY - {"pydantic"})


def test_importing_the_cli_imports_no_numerics_or_store() -> None:
    """`import cli` (a test, a notebook, the console entry) loads the Typer app only."""
    mods, _ = _imports(["-c", "import cli, calib"])
    assert not _top(mods) & HEAVY
    assert not {m for m in mods if m.startswith("calib.")} - {"calib.config", "calib.errors", "calib._typing"}


def test_library_run_imports_no_cli_framework_or_network(exact_harvest: Path, tmp_path: Path) -> None:
    """`calib.auto.auto_calibrate` (what the benchmark times) pulls in neither typer, rich, httpx nor cli."""
    code = ("import sys; from pathlib import Path; from datetime import datetime, UTC; "
            "from calib.auto import auto_calibrate, auto_calibration_config; from calib.config import Settings; "
            f"cfg = auto_calibration_config('BTC', data_dir=Path({str(exact_harvest)!r}), settings=Settings(), "
            f"as_of=datetime.fromisoformat({END.isoformat()!r}), lookback_days=2.0, dte_min=0.0); "
            f"run = auto_calibrate(cfg, Path({str(tmp_path / 'h.duckdb')!r})); print(run.result.status)")
    mods, _ = _imports(["-c", code])
    assert not _top(mods) & {"typer", "rich", "httpx", "cli", "pydantic", "scipy", "pyarrow"}
    assert "duckdb" in _top(mods)  # the store, at the end


def test_engine_import_leaves_duckdb_and_numpy_ma_out() -> None:
    mods, _ = _imports(["-c", "import calib.calibration, calib.engine.bootstrap"])
    assert not _top(mods) & {"duckdb", "typer", "rich", "httpx"}
    assert "numpy.ma" not in mods


def test_bench_worker_does_not_import_the_cli(tmp_path: Path) -> None:
    from calib.data.demo import DemoSpec, generate_demo_harvest

    root = tmp_path / "h"
    end = datetime(2025, 6, 30, tzinfo=UTC)
    generate_demo_harvest(root, DemoSpec(underlyings=("BTC",), end=end, days=8.5, step_minutes=120, seed=3,
                                         max_instruments=60))
    spec = json.dumps({"data_dir": str(root), "window_days": 1.0, "db": str(tmp_path / "w.duckdb")})
    mods, _ = _imports(["-m", "calib.bench", "--worker", spec])
    assert not _top(mods) & {"typer", "rich", "cli", "pydantic", "httpx"}
    assert "numpy.ma" not in mods


@given(st.lists(st.floats(-1e6, 1e6), min_size=1, max_size=300),
       st.lists(st.floats(0.0, 1.0), min_size=1, max_size=5))
def test_quantiles_equal_numpy(values: list[float], qs: list[float]) -> None:
    assert np.array_equal(quantiles(np.array(values), qs), np.quantile(np.array(values), qs))

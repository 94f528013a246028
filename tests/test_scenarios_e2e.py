"""End to end: demo harvests with each pathology -> `calib auto-calibrate` -> graded run in DuckDB."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import polars as pl
import pytest
from polars.testing import assert_frame_equal
from typer.testing import CliRunner

from calib.data.demo import DemoSpec, generate_demo_harvest
from calib.queries import list_runs
from cli import app

runner = CliRunner()
END = datetime(2026, 11, 20, tzinfo=UTC)
BUNDLE = Path(__file__).resolve().parents[1] / "data" / "live_deribit"
# The bundled data set, as the README says it was made.
BUNDLE_SPEC = DemoSpec(underlyings=("BTC", "ETH"), end=END, days=22, step_minutes=180, seed=7)


@pytest.mark.parametrize(
    ("scenario", "status", "code", "reason_part"),
    [
        ("normal", "ok", 0, "within thresholds"),
        ("vol_shock", "failed", 3, "Unrealistic auto-calibration: multiplier"),
        ("mult_at_bound", "failed", 3, "pinned at a search bound"),
        ("usd_marks", "failed", 3, "marks_not_in_coin"),
        ("iv_fraction", "failed", 3, "iv_not_in_percent"),
        ("missing_required", "failed", 3, "missing_required_column"),
        ("no_mark_iv", "degraded", 0, "degraded"),
        ("no_index", "degraded", 0, "degraded"),
        ("outage", "degraded", 0, "degraded"),
        ("truncated_file", "degraded", 0, "degraded"),
    ],
)
def test_scenario_graded_and_recorded(scenario: str, status: str, code: int, reason_part: str,
                                      tmp_path: Path) -> None:
    root = tmp_path / "harvest"
    generate_demo_harvest(root, DemoSpec(underlyings=("BTC",), end=END, days=22, step_minutes=180,
                                         scenario=scenario))
    db = tmp_path / "h.duckdb"
    res = runner.invoke(app, ["auto-calibrate", "--underlying", "BTC", "--data-dir", str(root), "--db", str(db),
                              "--as-of", END.isoformat(), "--json"])
    assert res.exit_code == code, res.output
    d = json.loads(res.stdout)
    assert d["status"] == status
    assert reason_part in d["reason"]
    runs = list_runs(db)
    assert runs["status"].to_list() == [status]
    assert runs["reason"][0] == d["reason"]
    assert runs["applied"].to_list() == [False]


@pytest.mark.skipif(not BUNDLE.is_dir(), reason="bundled data set not present")
def test_bundled_data_is_reproducible_from_the_generator(tmp_path: Path) -> None:
    generate_demo_harvest(tmp_path, BUNDLE_SPEC)
    for und in ("BTC", "ETH"):
        ours = sorted(p.relative_to(BUNDLE) for p in (BUNDLE / und).rglob("*.parquet"))
        fresh = sorted(p.relative_to(tmp_path) for p in (tmp_path / und).rglob("*.parquet"))
        assert ours == fresh
        for rel in ours[:: max(1, len(ours) // 5)]:
            # Same rows and values; floats to 1e-12 relative, so a last-bit change in a pricing kernel
            # (e.g. a different but equally exact normal CDF) does not count as a different data set.
            assert_frame_equal(pl.read_parquet(BUNDLE / rel), pl.read_parquet(tmp_path / rel), rel_tol=1e-12,
                               abs_tol=0.0)


@pytest.mark.skipif(not BUNDLE.is_dir(), reason="bundled data set not present")
def test_readme_first_command_on_bundled_data(tmp_path: Path) -> None:
    res = runner.invoke(app, ["auto-calibrate", "--underlying", "BTC", "--data-dir", str(BUNDLE),
                              "--db", str(tmp_path / "h.duckdb")])
    assert res.exit_code == 0, res.output
    assert "Status: OK" in res.stdout

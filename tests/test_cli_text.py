"""The CLI's text renderings live in the library (issue 14: thin commands): calib.ui.text and summary() methods."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import polars as pl

from calib.queries import AppliedMultipliers
from calib.ui.text import NO_RUNS, history_text

CLI = Path(__file__).resolve().parents[1] / "cli.py"


def _run(**kw: object) -> dict[str, object]:
    row: dict[str, object] = {
        "created_at": datetime(2026, 11, 20, 8, 5, tzinfo=UTC), "underlying": "BTC", "source": "live",
        "status": "degraded", "recommended_multiplier": 1.10504, "smoothed_multiplier": None,
        "vega_weighted_mae_pct": 3.614, "mae_pct": 9.126, "n_samples": 12444, "applied": True,
        "policy_reason": None, "reason": "Calibration within thresholds"}
    return {**row, **kw}


def test_history_text_one_line_per_run() -> None:
    text = history_text(pl.DataFrame([_run(), _run(source="harvested", status="ok", applied=False,
                                                 reason=None, n_samples=None, policy_reason="x" * 90)]))
    header, first, second = text.split("\n")
    assert header.startswith("created (UTC)     und  source    status        rec smoothed  vMAE %")
    assert first == ("2026-11-20 08:05  BTC  live      DEGRADED   1.1050        -    3.61    9.13   12,444 yes      "
                     "Calibration within thresholds")
    assert second.endswith("       - no       " + "x" * 70)


def test_history_text_of_no_runs_is_the_hint() -> None:
    assert history_text(pl.DataFrame([_run()]).clear()) == NO_RUNS


def test_state_summary() -> None:
    assert AppliedMultipliers(underlying="ETH", global_multiplier=None).summary().startswith(
        "No multipliers applied for ETH yet (the engine uses 1.0000).")
    st = AppliedMultipliers(underlying="BTC", global_multiplier=1.06961, bands={"weekly": 1.0665},
                            updated_at=datetime(2026, 11, 20, 8, 5, 9, tzinfo=UTC), run_id="r1")
    assert st.summary().split("\n") == ["Applied multipliers for BTC (updated 2026-11-20 08:05:09Z, run r1)",
                                        "  global     1.0696", "  weekly     1.0665"]


def test_cli_renders_no_tables_itself() -> None:
    """Commands echo what the library renders: no per-row loop and no column header in cli.py."""
    src = CLI.read_text()
    assert "iter_rows" not in src and "created (UTC)" not in src and "pl.Config" not in src

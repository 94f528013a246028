"""The applied state has one reader (calib.store.applied): the tested multiplier a library run starts from."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from calib.calibration import resolve_multiplier_tested, run_historical_calibration_from_harvest
from calib.config import CalibrationConfig, HarvestConfig
from calib.queries import applied_multipliers, applied_state
from calib.store.applied import applied_global, write_applied
from calib.store.connection import connect
from calib.store.migrations import migrate
from tests.synth import END


def _apply(db: Path, mult: float) -> None:
    with connect(db, read_only=False) as con:
        migrate(con)
        write_applied(con, "BTC", mult, {"weekly": mult + 0.1}, run_id="r1", at=datetime(2026, 1, 1, tzinfo=UTC),
                      reason="test")


@pytest.fixture
def two_histories(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    """A history file with 1.137 applied (the run's) and another with 0.95 that `$CALIB_DB` names."""
    db, other = tmp_path / "h.duckdb", tmp_path / "other.duckdb"
    _apply(db, 1.137)
    _apply(other, 0.95)
    monkeypatch.setenv("CALIB_DB", str(other))
    return db, other


def test_unset_multiplier_tested_is_the_applied_global(tmp_path: Path) -> None:
    """A library caller passing multiplier_tested=None is tested at the applied multiplier, not 1.0."""
    db = tmp_path / "h.duckdb"
    _apply(db, 1.137)
    unset = CalibrationConfig(underlying="BTC", multiplier_tested=None)
    assert resolve_multiplier_tested(unset, db).multiplier_tested == pytest.approx(1.137)
    assert resolve_multiplier_tested(unset, tmp_path / "no.duckdb").multiplier_tested == 1.0  # no history file
    assert resolve_multiplier_tested(unset, tmp_path / "missing.duckdb").multiplier_tested == 1.0
    assert resolve_multiplier_tested(CalibrationConfig(underlying="ETH", multiplier_tested=None), db
                                     ).multiplier_tested == 1.0  # nothing applied for ETH
    given = CalibrationConfig(underlying="BTC", multiplier_tested=0.9)
    assert resolve_multiplier_tested(given, db).multiplier_tested == 0.9  # an explicit value is kept


def test_a_run_with_unset_multiplier_reports_the_applied_one(exact_harvest: Path, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch,
                                                             two_histories: tuple[Path, Path]) -> None:
    """The run reads the history it is handed; `$CALIB_DB` only when it is handed none (SPEC: the applied one)."""
    db, _ = two_histories
    config = CalibrationConfig(underlying="BTC", min_dte=0, lookback_days=2, multiplier_tested=None,
                               harvest=HarvestConfig(data_root=exact_harvest, end_time=END))
    result = run_historical_calibration_from_harvest(config, db_path=db)
    assert result.global_metrics.multiplier_tested == pytest.approx(1.137)
    # No history handed in: the user's history file, the one `$CALIB_DB` names (as the CLI without --db).
    assert run_historical_calibration_from_harvest(config).global_metrics.multiplier_tested == pytest.approx(0.95)
    monkeypatch.delenv("CALIB_DB")
    monkeypatch.chdir(tmp_path)  # no data/calibration.duckdb here: nothing applied, 1.0
    assert run_historical_calibration_from_harvest(config).global_metrics.multiplier_tested == 1.0


def test_a_live_run_reads_the_history_it_is_given(exact_harvest: Path, two_histories: tuple[Path, Path]) -> None:
    from calib.live import run_calibration_extended

    db, _ = two_histories
    config = CalibrationConfig(underlying="BTC", min_dte=0, multiplier_tested=None, replay=True,
                               harvest=HarvestConfig(data_root=exact_harvest))
    assert run_calibration_extended(config, db_path=db).global_metrics.multiplier_tested == pytest.approx(1.137)
    assert run_calibration_extended(config).global_metrics.multiplier_tested == pytest.approx(0.95)


def test_every_reader_agrees(tmp_path: Path) -> None:
    db = tmp_path / "h.duckdb"
    assert applied_global(db, "BTC") is None  # no file
    _apply(db, 1.25)
    assert applied_global(db, "BTC") == pytest.approx(1.25)
    assert applied_global(db, "ETH") is None
    state = applied_state(db, "BTC")
    assert state.global_multiplier == pytest.approx(1.25) and state.bands == {"weekly": pytest.approx(1.35)}
    frame = applied_multipliers(db, "BTC")
    assert frame["scope"].to_list() == ["global", "weekly"]
    assert frame["multiplier"].to_list() == pytest.approx([1.25, 1.35])

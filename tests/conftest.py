"""Shared fixtures: exact-model harvests on disk and a temporary history file."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import settings

from tests.synth import END, exact_market

# Same examples on every run: CI results do not depend on luck (and failures replay).
settings.register_profile("calib", derandomize=True, deadline=None)
settings.load_profile("calib")


@pytest.fixture(autouse=True)
def _isolated_history(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """No test reads the developer's data/calibration.duckdb or calib.toml by accident."""
    home = tmp_path_factory.mktemp("calib-env")
    monkeypatch.setenv("CALIB_DB", str(home / "history.duckdb"))
    monkeypatch.setenv("CALIB_CONFIG", str(home / "calib.toml"))


@pytest.fixture
def exact_harvest(tmp_path: Path) -> Path:
    """BTC harvest, 10 days hourly, market IV = RV_7d x 1.2 (flat skew)."""
    root = tmp_path / "harvest"
    exact_market(root)
    return root


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "history.duckdb"


@pytest.fixture
def end_ts() -> str:
    return END.isoformat()

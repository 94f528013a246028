"""Shared fixtures: exact-model harvests on disk and a temporary history file."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import settings

from calib.sources.deribit import DeribitClient
from tests.fake_deribit import FakeDeribit
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
def fake() -> Iterator[FakeDeribit]:
    """A Deribit-shaped JSON-RPC server on 127.0.0.1, stopped after the test."""
    with FakeDeribit() as server:
        yield server


@pytest.fixture
def client(fake: FakeDeribit) -> Iterator[DeribitClient]:
    with DeribitClient(base_url=fake.base_url, timeout_s=2.0, max_retries=3, backoff_s=0.001) as c:
        yield c


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

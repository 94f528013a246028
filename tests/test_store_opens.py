"""A run opens the history file as few times as its guarantees allow (issue 15: fixed cost per run).

Each DuckDB open costs ~10-20 ms. A recorded run needs two: one read-only open
before any work (the file is writable, not empty, not from a newer calib, and
the applied multiplier the run is tested at) and the write transaction at the
end. The file is not held in between, so readers (the app, `calib serve`) are
never locked out for the length of a calibration.
"""

from __future__ import annotations

from pathlib import Path

import duckdb
import pytest
from typer.testing import CliRunner

from cli import app
from tests.fake_deribit import Fail, FakeDeribit
from tests.synth import END, exact_market

runner = CliRunner()
BOOK = "public/get_book_summary_by_currency"


@pytest.fixture(scope="module")
def market(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("opens") / "m120"
    exact_market(root, m_by_dte=((0, 1000, 1.2),), days=9)
    return root


@pytest.fixture
def opens(monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """`read_only` of every DuckDB open in this test, in order."""
    seen: list[bool] = []
    real = duckdb.connect

    def counted(*args: object, **kwargs: object) -> duckdb.DuckDBPyConnection:
        seen.append(bool(kwargs.get("read_only", False)))
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(duckdb, "connect", counted)
    return seen


def _auto(market: Path, db: Path) -> list[str]:
    return ["auto-calibrate", "-u", "BTC", "--data-dir", str(market), "--db", str(db), "--dte-min", "0",
            "--lookback-days", "2", "--as-of", END.isoformat()]


def _live(market: Path, db: Path) -> list[str]:
    return ["calibrate-live", "-u", "BTC", "--replay", str(market), "--db", str(db), "--dte-min", "0"]


@pytest.mark.parametrize("command", [_auto, _live])
def test_a_run_opens_the_file_once_to_check_and_read_and_once_to_write(
        market: Path, db_path: Path, opens: list[bool], command: object) -> None:
    args = command(market, db_path)  # type: ignore[operator]
    res = runner.invoke(app, args)  # no file yet: nothing to open before the write
    assert res.exit_code == 0, res.output
    assert opens == [False]
    opens.clear()
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    assert opens == [True, False]  # check + applied multiplier, then the one write transaction


def test_an_unreachable_exchange_run_checks_then_reads_and_writes(fake: FakeDeribit, db_path: Path, market: Path,
                                                                  opens: list[bool]) -> None:
    """The exchange path checks the file before the network and reads the applied multiplier after
    it (a Force-Apply during the wait is what the run is tested at: tests/test_live_outage.py),
    so it opens read-only twice; the network wait dwarfs the ~12 ms of an open."""
    assert runner.invoke(app, _live(market, db_path)).exit_code == 0
    opens.clear()
    fake.script(BOOK, [Fail.status_code(500)] * 10)
    res = runner.invoke(app, ["calibrate-live", "-u", "BTC", "--base-url", fake.base_url, "--db", str(db_path),
                              "--source-timeout", "1"])
    assert res.exit_code == 3, res.output
    assert opens == [True, True, False]


def test_an_unwritable_file_is_refused_before_the_exchange_is_asked(fake: FakeDeribit, tmp_path: Path) -> None:
    res = runner.invoke(app, ["calibrate-live", "-u", "BTC", "--base-url", fake.base_url, "--db", str(tmp_path)])
    assert res.exit_code == 1, res.output
    (line,) = res.stderr.splitlines()
    assert "is a directory" in line
    assert fake.calls(BOOK) == 0


def test_force_apply_opens_the_file_once(market: Path, db_path: Path, opens: list[bool], tmp_path: Path) -> None:
    """`calib apply --force` writes at once: its write transaction's open is also the check (a newer
    schema is refused there, before any write: tests/test_store_guards.py)."""
    live = _live(market, db_path)
    assert runner.invoke(app, live).exit_code == 0
    assert runner.invoke(app, live).exit_code == 0  # skipped (cooldown): Force-Apply has work
    opens.clear()
    res = runner.invoke(app, ["apply", "--force", "-u", "BTC", "--db", str(db_path)])
    assert res.exit_code == 0, res.output
    assert opens == [False]
    res = runner.invoke(app, ["apply", "--force", "-u", "BTC", "--db", str(tmp_path)])  # a directory
    assert res.exit_code == 1
    (line,) = res.stderr.splitlines()
    assert "is a directory" in line

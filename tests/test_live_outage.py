"""Exchange failures leave a trace (issue 13, defect 7), against the local fake Deribit.

500s, malformed JSON, a JSON-RPC error or a slow exchange: `calibrate-live`
records a failed live run naming what failed, exits 3, and gives up within its
time budget; the policy never applies it.
"""

from __future__ import annotations

import inspect
import json
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from calib.errors import SourceError
from calib.live_outage import SOURCE_UNAVAILABLE, is_source_outage
from calib.queries import list_runs, run_detail
from calib.sources.deribit import DeribitClient
from calib.sources.live_chain import LIVE_SOURCE_BUDGET_S, fetch_live_chain
from cli import app
from tests.fake_deribit import Fail, FakeDeribit

runner = CliRunner()
BOOK = "public/get_book_summary_by_currency"


def _live(fake: FakeDeribit, db: Path, *extra: str) -> tuple[int, str, str, float]:
    t0 = time.monotonic()
    res = runner.invoke(app, ["calibrate-live", "-u", "BTC", "--base-url", fake.base_url, "--db", str(db),
                              "--dte-min", "0", "--dte-max", "40", *extra])
    return res.exit_code, res.stdout, res.stderr, time.monotonic() - t0


@pytest.mark.parametrize(("failure", "cause"), [
    ([Fail.status_code(500)] * 10, "HTTP 500"),
    ([Fail.malformed()], "malformed JSON"),
    ([Fail.rpc_error(10009, "not_open")], "code 10009: not_open"),
    ([Fail.slow(30)] * 10, "time budget"),
])
def test_exchange_failure_is_a_recorded_failed_live_run(fake: FakeDeribit, tmp_path: Path,
                                                        failure: list[Fail], cause: str) -> None:
    fake.script(BOOK, failure)
    db = tmp_path / "h.duckdb"
    code, out, err, elapsed = _live(fake, db, "--source-timeout", "1.5", "--json")
    assert code == 3, err
    assert "Traceback" not in out + err
    assert elapsed < 6.0  # the budget (1.5 s) plus the CLI's own work
    d = json.loads(out)
    assert d["status"] == "failed" and d["source"] == "live" and d["applied"] is False
    assert d["reason"].startswith("Source unavailable: ") and cause in d["reason"]
    assert BOOK in d["reason"] or "get_book_summary_by_currency" in d["reason"]
    assert [i["code"] for i in d["data_quality"]["issues"]] == [SOURCE_UNAVAILABLE]
    assert d["policy"]["decision"] == "skipped"
    assert "WARNING: LIVE CALIBRATION FAILED" in err
    runs = list_runs(db, source="live")
    assert runs["run_id"].to_list() == [d["run_id"]]
    assert runs["status"].to_list() == ["failed"] and runs["applied"].to_list() == [False]
    stored = run_detail(db, "BTC", d["run_id"])
    assert stored is not None and is_source_outage(stored.result)


def test_outage_then_recovery(fake: FakeDeribit, tmp_path: Path) -> None:
    db = tmp_path / "h.duckdb"
    fake.script(BOOK, [Fail.rpc_error(10028, "too_many_requests"), Fail.rpc_error(11044, "not_open")])
    code, out, _, _ = _live(fake, db, "--source-timeout", "1")
    assert code == 3
    assert "Source unavailable" in out
    code, _, err, _ = _live(fake, db)
    assert code in (0, 3), err
    runs = list_runs(db, source="live")
    assert runs.height == 2 and runs["reason"].to_list()[1].startswith("Source unavailable")


def test_time_budget_bounds_every_call_together(fake: FakeDeribit) -> None:
    fake.script(BOOK, [Fail.slow(30)] * 10)
    with DeribitClient(base_url=fake.base_url, timeout_s=10.0, max_retries=4, backoff_s=0.01) as client:
        t0 = time.monotonic()
        with pytest.raises(SourceError, match=r"did not answer within [\d.]+ s .*1 s time budget"), \
                client.time_budget(1.0):
            client.book_summary("BTC")
        assert time.monotonic() - t0 < 2.0
        assert client.index_price("BTC") > 0  # outside the budget the client works as before


def test_a_retry_that_cannot_fit_the_budget_is_not_waited_for(fake: FakeDeribit) -> None:
    fake.script(BOOK, [Fail.status_code(500)] * 3)
    with DeribitClient(base_url=fake.base_url, max_retries=4, backoff_s=5.0) as client:
        t0 = time.monotonic()
        with pytest.raises(SourceError, match=r"within the 1 s time budget \(last: HTTP 500\)"), \
                client.time_budget(1.0):
            client.book_summary("BTC")
        assert time.monotonic() - t0 < 1.0


def test_default_budget_is_at_most_20_s() -> None:
    assert LIVE_SOURCE_BUDGET_S <= 20.0
    assert inspect.signature(fetch_live_chain).parameters["budget_s"].default == LIVE_SOURCE_BUDGET_S
    res = runner.invoke(app, ["calibrate-live", "--help"])
    assert "--source-timeout" in res.stdout and "15.0" in res.stdout


def test_a_force_apply_during_the_fetch_is_what_the_chain_is_tested_at(fake: FakeDeribit, tmp_path: Path) -> None:
    """The applied multiplier is read once the chain is in, not before the network wait.

    A Force-Apply (here: a write of the applied table in its own transaction) that lands
    while the exchange is slow must be the multiplier the chain is scored at.
    """
    import threading
    from datetime import UTC, datetime

    from calib.config import CalibrationConfig, PolicyConfig
    from calib.live_outage import calibrate_live_from_exchange
    from calib.store.applied import write_applied
    from calib.store.connection import connect, write_transaction

    db = tmp_path / "h.duckdb"
    with connect(db, read_only=False):
        pass
    fake.script(BOOK, [Fail.slow(1.0)])
    out: dict[str, object] = {}

    def live() -> None:
        cfg = CalibrationConfig(underlying="BTC", source="live", min_dte=0.0, max_dte=40.0)
        out["record"] = calibrate_live_from_exchange(cfg, db, PolicyConfig(), base_url=fake.base_url, budget_s=10.0)

    t = threading.Thread(target=live)
    t.start()
    deadline = time.monotonic() + 5.0
    while fake.calls(BOOK) == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert fake.calls(BOOK) == 1  # the live run is waiting on the slow exchange now
    with write_transaction(db, "force-apply during the fetch") as con:
        write_applied(con, "BTC", 1.23, {}, run_id="forced", at=datetime.now(UTC), reason="Forced by user")
    t.join(20.0)
    record = out["record"]
    assert record.result.global_metrics.multiplier_tested == pytest.approx(1.23)  # type: ignore[attr-defined]

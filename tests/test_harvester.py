"""Harvester: atomic files, failure survival, clean Ctrl-C, drift-free schedule."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl
import pytest

from calib.data.layout import list_parquet_files
from calib.data.schema import HARVEST_SCHEMA
from calib.errors import InvalidInputError
from calib.sources.deribit import DeribitClient
from calib.sources.harvester import harvest_once, run_harvester
from tests.fake_deribit import INDEX_USD, Fail, FakeDeribit, book_entries

BOOK = "public/get_book_summary_by_currency"


@pytest.fixture
def client(fake: FakeDeribit) -> Iterator[DeribitClient]:
    """No retries: a scripted failure must reach the harvester's own error handling."""
    with DeribitClient(base_url=fake.base_url, timeout_s=2.0, max_retries=0, backoff_s=0.001) as c:
        yield c


def test_harvest_once_writes_btc_and_eth(client: DeribitClient, tmp_path: Path) -> None:
    logs = harvest_once(client, ["BTC", "ETH"], tmp_path)

    assert [entry.underlying for entry in logs] == ["BTC", "ETH"]
    for entry in logs:
        assert entry.ok, entry.error
        assert entry.n_rows == 12 and entry.latency_ms > 0
        assert entry.path is not None and entry.snapshot_ts is not None
        expected = tmp_path / entry.underlying / f"date={entry.snapshot_ts:%Y-%m-%d}"
        assert entry.path.parent == expected
        assert entry.path.name == f"snapshot_{entry.snapshot_ts:%Y%m%dT%H%M%SZ}.parquet"
        frame = pl.read_parquet(entry.path)
        assert frame.schema == pl.Schema(HARVEST_SCHEMA)
        assert frame["index_price"].unique().to_list() == [INDEX_USD[entry.underlying]]
        assert frame["instrument_name"].str.starts_with(f"{entry.underlying}-").all()
        assert entry.path.name in entry.describe() and "12 rows" in entry.describe()
    assert len(list_parquet_files(tmp_path, "BTC")) == len(list_parquet_files(tmp_path, "ETH")) == 1


def test_same_second_snapshots_do_not_overwrite(client: DeribitClient, tmp_path: Path) -> None:
    first = harvest_once(client, ["BTC"], tmp_path)[0]
    second = harvest_once(client, ["BTC"], tmp_path)[0]
    assert first.path != second.path
    assert first.path is not None and first.path.exists()


def test_files_appear_atomically_to_a_concurrent_reader(
    fake: FakeDeribit, client: DeribitClient, tmp_path: Path
) -> None:
    # Big chains make each write take a while, widening any partial-file window.
    now = datetime.now(UTC)
    fake.book["BTC"] = [e for _ in range(100) for e in book_entries("BTC", now)]
    stop = threading.Event()
    errors: list[str] = []
    reads = 0

    def reader() -> None:
        nonlocal reads
        while not stop.is_set():
            for path in list_parquet_files(tmp_path, "BTC"):
                try:
                    assert pl.read_parquet(path).height > 0
                    reads += 1
                except Exception as e:  # any failure on a visible file is a bug
                    errors.append(f"{path.name}: {type(e).__name__}: {e}")

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        summary = run_harvester(
            client, ["BTC"], tmp_path, 0.01, max_iterations=8, log=lambda _: None
        )
    finally:
        stop.set()
        thread.join()

    assert errors == []
    assert reads > 0
    assert summary.snapshots_written == 8 and summary.failures == 0
    assert len(list_parquet_files(tmp_path, "BTC")) == 8
    assert not [p for p in tmp_path.rglob("*") if p.name.startswith(".")]  # no temp left


def test_failed_poll_is_logged_and_the_next_one_succeeds(
    fake: FakeDeribit, client: DeribitClient, tmp_path: Path
) -> None:
    fake.script(BOOK, [Fail.status_code(503)])
    lines: list[str] = []
    summary = run_harvester(
        client, ["BTC"], tmp_path, 60.0, max_iterations=2, sleep=lambda _: None, log=lines.append
    )
    assert summary.iterations == 2 and summary.failures == 1 and summary.snapshots_written == 1
    failed = [line for line in lines if "poll failed" in line]
    assert len(failed) == 1 and "HTTP 503" in failed[0]
    assert any(line.startswith("BTC: 12 rows") for line in lines)
    assert len(list_parquet_files(tmp_path, "BTC")) == 1


def test_one_failing_underlying_does_not_block_the_other(
    fake: FakeDeribit, client: DeribitClient, tmp_path: Path
) -> None:
    fake.script(BOOK, [Fail.malformed()])  # the first request (BTC) fails
    btc, eth = harvest_once(client, ["BTC", "ETH"], tmp_path)
    assert not btc.ok and btc.error is not None and "malformed JSON" in btc.error
    assert btc.path is None
    assert eth.ok


def test_unreachable_source_is_survived(tmp_path: Path) -> None:
    with DeribitClient(base_url="http://127.0.0.1:1/api/v2", max_retries=0) as dead:
        lines: list[str] = []
        summary = run_harvester(
            dead, ["ETH"], tmp_path, 1.0, max_iterations=3, sleep=lambda _: None, log=lines.append
        )
    assert summary.failures == 3 and summary.snapshots_written == 0
    assert sum("Deribit unreachable at" in line for line in lines) == 3


def test_keyboard_interrupt_during_sleep_stops_cleanly(
    client: DeribitClient, tmp_path: Path
) -> None:
    def ctrl_c(_: float) -> None:
        raise KeyboardInterrupt

    lines: list[str] = []
    summary = run_harvester(client, ["BTC", "ETH"], tmp_path, 5.0, sleep=ctrl_c, log=lines.append)
    assert summary.interrupted and summary.iterations == 1 and summary.snapshots_written == 2
    assert "stopped by user" in lines[-1]


class _InterruptingClient:
    """Writes one snapshot, then raises KeyboardInterrupt inside the next poll."""

    def __init__(self, real: DeribitClient) -> None:
        self.real = real
        self.polls = 0

    def book_summary(self, currency: str) -> pl.DataFrame:
        self.polls += 1
        if self.polls == 2:
            raise KeyboardInterrupt
        return self.real.book_summary(currency)

    def index_price(self, currency: str) -> float:
        return self.real.index_price(currency)


def test_keyboard_interrupt_during_poll_stops_cleanly(
    client: DeribitClient, tmp_path: Path
) -> None:
    summary = run_harvester(
        _InterruptingClient(client), ["BTC", "ETH"], tmp_path, 5.0, log=lambda _: None
    )
    assert summary.interrupted and summary.snapshots_written == 1
    assert len(list_parquet_files(tmp_path, "BTC")) == 1
    assert list_parquet_files(tmp_path, "ETH") == []


class _ClockedClient:
    """A source whose polls take `poll_s` seconds of a fake clock."""

    def __init__(self, clock: list[float], poll_s: list[float]) -> None:
        self.clock, self.poll_s = clock, poll_s

    def book_summary(self, currency: str) -> pl.DataFrame:
        self.clock[0] += self.poll_s.pop(0)
        ts = datetime(2025, 1, 1, tzinfo=UTC) + timedelta(seconds=self.clock[0])
        row = {"snapshot_ts": ts, "instrument_name": f"{currency}-1JAN26-100000-C"}
        return pl.DataFrame([row]).select(
            pl.col(c).cast(t) if c in row else pl.lit(1.0).cast(t).alias(c)
            for c, t in HARVEST_SCHEMA.items()
        )

    def index_price(self, currency: str) -> float:
        return 100.0


def test_schedule_is_aligned_to_the_interval(tmp_path: Path) -> None:
    clock = [1000.0]
    sleeps: list[float] = []

    def fake_sleep(seconds: float) -> None:
        sleeps.append(round(seconds, 9))
        clock[0] += seconds

    lines: list[str] = []
    source = _ClockedClient(clock, [0.3, 0.9, 2.5, 0.1, 0.2])
    summary = run_harvester(
        source, ["BTC"], tmp_path, 1.0, max_iterations=5, sleep=fake_sleep,
        log=lines.append, clock=lambda: clock[0],
    )  # fmt: skip
    # polls start at 1000, 1001, 1002, (1003, 1004 skipped: the 2.5 s poll), 1005, 1006
    assert sleeps == [0.7, 0.1, 0.5, 0.9]
    assert summary.skipped_ticks == 2 and summary.iterations == 5
    assert any("skipped 2 tick(s)" in line for line in lines)


def test_once_takes_one_snapshot(client: DeribitClient, tmp_path: Path) -> None:
    summary = run_harvester(client, ["ETH"], tmp_path, 60.0, once=True, log=lambda _: None)
    assert summary.iterations == 1 and summary.snapshots_written == 1 and not summary.interrupted


def test_bad_arguments(client: DeribitClient, tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError, match="`underlyings` must be among BTC, ETH; got 'SOL'"):
        harvest_once(client, ["SOL"], tmp_path)
    with pytest.raises(InvalidInputError, match="`interval_s` must be positive; got 0"):
        run_harvester(client, ["BTC"], tmp_path, 0)


def test_empty_chain_is_a_failure_not_an_empty_file(
    fake: FakeDeribit, client: DeribitClient, tmp_path: Path
) -> None:
    fake.book["BTC"] = [{"instrument_name": "BTC_USDC-1JAN26-100000-C", "mark_price": 1.0}]
    (entry,) = harvest_once(client, ["BTC"], tmp_path)
    assert not entry.ok and entry.error == "Deribit listed no BTC options"
    assert list_parquet_files(tmp_path, "BTC") == []


def test_finished_days_are_compacted_automatically(client: DeribitClient, tmp_path: Path) -> None:
    # Three snapshot files of an earlier day (as a harvester left them), then one live poll.
    day = datetime(2026, 1, 5, tzinfo=UTC)
    for _ in range(3):
        harvest_once(client, ["BTC"], tmp_path)
    written = list_parquet_files(tmp_path, "BTC")
    n_rows = sum(pl.read_parquet(f).height for f in written)
    old_dir = tmp_path / "BTC" / f"date={day:%Y-%m-%d}"
    old_dir.mkdir(parents=True)
    for i, f in enumerate(written):
        frame = pl.read_parquet(f).with_columns(pl.lit(day + timedelta(minutes=5 * i)).cast(
            pl.Datetime("ms", "UTC")).alias("snapshot_ts"))
        frame.write_parquet(old_dir / f"snapshot_{i}.parquet")
        f.unlink()
    lines: list[str] = []
    run_harvester(client, ["BTC"], tmp_path, 60.0, once=True, log=lines.append,
                  today=lambda: (day + timedelta(days=2)).date())
    old_files = [p for p in list_parquet_files(tmp_path, "BTC") if p.parent == old_dir]
    assert [p.name for p in old_files] == [f"compact_{day:%Y-%m-%d}.parquet"]
    assert pl.read_parquet(old_files[0]).height == n_rows
    assert pl.read_parquet(old_files[0])["snapshot_ts"].n_unique() == 3
    assert any("compact" in line.lower() for line in lines)


def test_compaction_can_be_turned_off(client: DeribitClient, tmp_path: Path) -> None:
    old_dir = tmp_path / "BTC" / "date=2026-01-05"
    harvest_once(client, ["BTC"], tmp_path)
    (f,) = list_parquet_files(tmp_path, "BTC")
    old_dir.mkdir(parents=True)
    f.rename(old_dir / "snapshot_a.parquet")
    run_harvester(client, ["BTC"], tmp_path, 60.0, once=True, log=lambda _: None, compact=False)
    assert (old_dir / "snapshot_a.parquet").exists()

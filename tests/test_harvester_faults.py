"""Harvester and compaction under faults (issue 13, defects 5 and 8), on the local fake Deribit.

A full disk (injected at fsync, where a real full volume reports ENOSPC), 429s
with Retry-After, all-null chains, overrunning polls, a fresh data dir and the
temp files a killed writer leaves behind. Real full-volume runs are in
tests/test_full_disk.py.
"""

from __future__ import annotations

import errno
import os
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl
import pytest
from typer.testing import CliRunner

from calib.data import compact as compact_mod
from calib.data import layout
from calib.data.compact import CompactionError, compact_day
from calib.data.layout import STALE_TEMP_AGE_S, list_parquet_files
from calib.sources.deribit import DeribitClient
from calib.sources.harvester import harvest_once, retry_logger, run_harvester
from cli import app
from tests.fake_deribit import Fail, FakeDeribit, book_entries
from tests.test_harvester import _ClockedClient

BOOK = "public/get_book_summary_by_currency"
runner = CliRunner()


@pytest.fixture
def client(fake: FakeDeribit) -> Iterator[DeribitClient]:
    with DeribitClient(base_url=fake.base_url, timeout_s=2.0, max_retries=0, backoff_s=0.001) as c:
        yield c


def _disk_full_after(monkeypatch: pytest.MonkeyPatch, module: object, n_ok: int, n_fail: int) -> list[int]:
    """`os.fsync` as a volume that fills up: `n_ok` calls work, the next `n_fail` raise ENOSPC."""
    real, calls = os.fsync, [0]

    def fsync(fd: int) -> None:
        calls[0] += 1
        if n_ok < calls[0] <= n_ok + n_fail:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real(fd)

    monkeypatch.setattr(module.os, "fsync", fsync)  # type: ignore[attr-defined]
    return calls


def _hidden(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.name.startswith(".")]


# --------------------------------------------------------------------------- defect 5: full disk


def test_full_disk_poll_is_logged_and_the_harvest_goes_on(client: DeribitClient, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    _disk_full_after(monkeypatch, layout, n_ok=0, n_fail=3)
    lines: list[str] = []
    summary = run_harvester(client, ["BTC", "ETH"], tmp_path, 60.0, max_iterations=3, sleep=lambda _: None,
                            log=lines.append)
    failed = [line for line in lines if "poll failed" in line]
    assert len(failed) == 3
    assert all("[OSError]" in line and "No space left on device" in line for line in failed)
    assert summary.iterations == 3 and summary.failures == 3 and summary.snapshots_written == 3
    assert len(list_parquet_files(tmp_path, "BTC")) + len(list_parquet_files(tmp_path, "ETH")) == 3
    assert _hidden(tmp_path) == []  # the failed writes left no temp file
    for f in list_parquet_files(tmp_path, "BTC") + list_parquet_files(tmp_path, "ETH"):
        assert pl.read_parquet(f).height == 12


def test_full_disk_harvest_once_is_one_line_per_poll(fake: FakeDeribit, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    _disk_full_after(monkeypatch, layout, n_ok=0, n_fail=10)
    res = runner.invoke(app, ["harvest", "-u", "BTC", "--once", "--data-dir", str(tmp_path), "--base-url",
                              fake.base_url])
    assert res.exit_code == 1  # nothing written
    assert "Traceback" not in res.output
    assert "BTC: poll failed after" in res.output and "[OSError] [Errno 28] No space left on device" in res.output


def _old_day(client: DeribitClient, root: Path, n: int = 3) -> tuple[Path, int]:
    day = datetime(2026, 1, 5, tzinfo=UTC)
    for _ in range(n):
        harvest_once(client, ["BTC"], root)
    written = list_parquet_files(root, "BTC")
    old_dir = root / "BTC" / f"date={day:%Y-%m-%d}"
    old_dir.mkdir(parents=True)
    for i, f in enumerate(written):
        pl.read_parquet(f).with_columns(pl.lit(day + timedelta(minutes=5 * i)).cast(pl.Datetime("ms", "UTC"))
                                        .alias("snapshot_ts")).write_parquet(old_dir / f"snapshot_{i}.parquet")
        f.unlink()
        f.parent.rmdir() if not any(f.parent.iterdir()) else None
    return old_dir, n * 12


def test_full_disk_compact_is_one_clear_line_and_keeps_the_files(client: DeribitClient, tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    old_dir, n_rows = _old_day(client, tmp_path)
    before = sorted(old_dir.iterdir())
    _disk_full_after(monkeypatch, compact_mod, n_ok=0, n_fail=1)
    res = runner.invoke(app, ["compact", "-u", "BTC", "--data-dir", str(tmp_path), "--date", "2026-01-05"])
    assert res.exit_code == 1
    assert "Traceback" not in res.output
    assert res.output.count("\n") == 1 and res.output.startswith("Error: could not write compact_2026-01-05.parquet")
    assert "No space left on device" in res.output and "files are left as they are" in res.output
    assert sorted(old_dir.iterdir()) == before
    assert sum(pl.read_parquet(f).height for f in before) == n_rows
    # once there is room again, the same command compacts the day
    res = runner.invoke(app, ["compact", "-u", "BTC", "--data-dir", str(tmp_path), "--date", "2026-01-05"])
    assert res.exit_code == 0, res.output
    assert [p.name for p in old_dir.iterdir()] == ["compact_2026-01-05.parquet"]


def test_compaction_failure_inside_the_harvester_is_logged(client: DeribitClient, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    old_dir, _ = _old_day(client, tmp_path)
    _disk_full_after(monkeypatch, compact_mod, n_ok=0, n_fail=1)
    lines: list[str] = []
    summary = run_harvester(client, ["BTC"], tmp_path, 60.0, once=True, log=lines.append,
                            today=lambda: datetime(2026, 1, 7, tzinfo=UTC).date())
    assert summary.snapshots_written == 1
    (line,) = [ln for ln in lines if "compaction of BTC failed" in ln]
    assert "CompactionError" in line and "No space left on device" in line
    assert len(list(old_dir.iterdir())) == 3


def test_compaction_error_is_a_calib_error(tmp_path: Path, client: DeribitClient,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    _old_day(client, tmp_path)
    _disk_full_after(monkeypatch, compact_mod, n_ok=0, n_fail=1)
    with pytest.raises(CompactionError, match=r"\(36 rows from 3 file\(s\)\): OSError: \[Errno 28\]"):
        compact_day(tmp_path, "BTC", "2026-01-05")


# --------------------------------------------------------------------------- defect 8: what it logs


def test_429_retry_after_and_backoff_are_logged(fake: FakeDeribit, tmp_path: Path) -> None:
    fake.script(BOOK, [Fail.too_many(2), Fail.status_code(503)])
    lines: list[str] = []
    waits: list[float] = []
    with DeribitClient(base_url=fake.base_url, max_retries=3, backoff_s=0.25, sleep=waits.append,
                       on_retry=retry_logger(lines.append)) as c:
        summary = run_harvester(c, ["BTC"], tmp_path, 60.0, once=True, log=lines.append)
    assert summary.snapshots_written == 1
    assert waits[0] == 2.0
    assert lines[1] == f"retrying {BOOK}: HTTP 429; retry 1/3, waiting 2.0 s (Retry-After 2 s)"
    assert lines[2].startswith(f"retrying {BOOK}: HTTP 503; retry 2/3, waiting ")
    (poll,) = [line for line in lines if line.startswith("BTC: 12 rows")]
    assert f", 2 retries ({sum(waits):.1f} s back-off) -> " in poll


def test_retries_are_logged_as_they_happen_not_after_the_poll(fake: FakeDeribit, tmp_path: Path) -> None:
    fake.script(BOOK, [Fail.slow(5)] * 2)
    stamped: list[tuple[float, str]] = []
    t0 = time.monotonic()
    with DeribitClient(base_url=fake.base_url, timeout_s=0.3, max_retries=2, backoff_s=0.01,
                       on_retry=retry_logger(lambda m: stamped.append((time.monotonic() - t0, m)))) as c:
        (entry,) = harvest_once(c, ["BTC"], tmp_path)
    assert entry.ok and entry.retries == 2
    assert [m.split(";")[0] for _, m in stamped] == [f"retrying {BOOK}: ReadTimeout"] * 2
    assert stamped[0][0] < 0.3 + 0.2 < entry.latency_ms / 1000  # logged after the first timeout, mid-poll


def test_overrun_is_a_warning_with_the_poll_time(tmp_path: Path) -> None:
    clock = [1000.0]

    def fake_sleep(seconds: float) -> None:
        clock[0] += seconds

    lines: list[str] = []
    run_harvester(_ClockedClient(clock, [0.3, 2.5, 0.1]), ["BTC"], tmp_path, 1.0, max_iterations=3,
                  sleep=fake_sleep, log=lines.append, clock=lambda: clock[0])
    (warning,) = [line for line in lines if line.startswith("WARNING")]
    assert warning == "WARNING: poll took 2.5 s, longer than the 1 s interval; skipped 2 tick(s)"


def test_fresh_data_dir_logs_no_false_failure(client: DeribitClient, tmp_path: Path) -> None:
    lines: list[str] = []
    summary = run_harvester(client, ["BTC", "ETH"], tmp_path / "fresh", 60.0, once=True, log=lines.append)
    assert summary.snapshots_written == 2 and summary.failures == 0
    assert not [line for line in lines if "compaction" in line or "poll failed" in line or "Error" in line], lines


def _nulled(entries: list[dict[str, object]], n: int) -> list[dict[str, object]]:
    fields = ("mark_price", "mark_iv", "underlying_price", "bid_price", "ask_price", "bid_iv", "ask_iv")
    return [{**e, **dict.fromkeys(fields)} if i < n else e for i, e in enumerate(entries)]


def test_all_null_chain_is_a_failure_not_12_rows(fake: FakeDeribit, client: DeribitClient, tmp_path: Path) -> None:
    fake.book["BTC"] = _nulled(book_entries("BTC"), 100)
    lines: list[str] = []
    summary = run_harvester(client, ["BTC"], tmp_path, 60.0, once=True, log=lines.append)
    assert summary.snapshots_written == 0 and summary.failures == 1
    (line,) = [ln for ln in lines if ln.startswith("BTC:")]
    assert "12 rows" not in line
    assert line.endswith("[SourceError] Deribit listed 12 BTC options but none has a mark_price and "
                         "underlying_price; nothing written")
    assert list_parquet_files(tmp_path, "BTC") == []


def test_partly_null_chain_is_written_and_says_so(fake: FakeDeribit, client: DeribitClient, tmp_path: Path) -> None:
    fake.book["BTC"] = _nulled(book_entries("BTC"), 3)
    (entry,) = harvest_once(client, ["BTC"], tmp_path)
    assert entry.ok and entry.n_rows == 12 and entry.n_unpriced == 3
    assert "12 rows (3 without mark/underlying price)" in entry.describe()


# --------------------------------------------------------------------------- stale temp files (kill -9)


def _temp(directory: Path, name: str, age_s: float) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_bytes(b"")
    then = time.time() - age_s
    os.utime(path, (then, then))
    return path


def test_next_write_removes_stale_temp_files_only(client: DeribitClient, tmp_path: Path) -> None:
    today = tmp_path / "BTC" / f"date={datetime.now(UTC):%Y-%m-%d}"
    stale = _temp(today, ".snapshot_20260101T000000Z.parquet.k2j3.tmp", STALE_TEMP_AGE_S + 60)
    fresh = _temp(today, ".snapshot_20260101T000500Z.parquet.x9q1.tmp", 5)  # a writer may still own it
    other = _temp(today, ".keep-me", STALE_TEMP_AGE_S + 60)
    (entry,) = harvest_once(client, ["BTC"], tmp_path)
    assert entry.ok
    assert not stale.exists() and fresh.exists() and other.exists()


def test_compact_removes_stale_temp_files(client: DeribitClient, tmp_path: Path) -> None:
    old_dir, _ = _old_day(client, tmp_path)
    stale = _temp(old_dir, ".compact_2026-01-05.parquet.abcd.tmp", STALE_TEMP_AGE_S + 60)
    res = compact_day(tmp_path, "BTC", "2026-01-05")
    assert res.stale_temp_removed == (stale,) and not stale.exists()
    assert "removed 1 stale temp file(s)" in res.describe()
    again = compact_day(tmp_path, "BTC", "2026-01-05")
    assert again.stale_temp_removed == () and not again.changed

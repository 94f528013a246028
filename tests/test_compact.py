"""Daily compaction: N files -> 1, bad files left alone, idempotent, never double counted."""

from __future__ import annotations

import shutil
import threading
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import polars as pl
import pyarrow.parquet as pq
import pytest

from calib.data.compact import (
    SOURCES_METADATA_KEY,
    CompactResult,
    compact_all,
    compact_day,
    compact_path,
    effective_parquet_files,
    read_compacted_sources,
)
from calib.data.layout import atomic_write_parquet, list_parquet_files, snapshot_path
from calib.data.schema import HARVEST_SCHEMA
from calib.errors import InvalidInputError, NoDataError

DAY = date(2025, 3, 14)


def snapshot_frame(ts: datetime, n: int = 5, underlying: str = "BTC") -> pl.DataFrame:
    """A small harvest-schema snapshot with `n` options, names in reverse order."""
    names = [f"{underlying}-28MAR25-{100_000 + 1000 * i}-C" for i in reversed(range(n))]
    rows = {
        "snapshot_ts": [ts] * n,
        "instrument_name": names,
        "mark_price": [0.01 * (i + 1) for i in range(n)],
        "mark_iv": [50.0 + i for i in range(n)],
        "underlying_price": [100_000.0] * n,
        "index_price": [99_900.0] * n,
    }
    frame = pl.DataFrame(rows)
    return frame.select(
        pl.col(c).cast(t) if c in rows else pl.lit(None, dtype=t).alias(c)
        for c, t in HARVEST_SCHEMA.items()
    )


def write_snapshots(root: Path, count: int, start: datetime | None = None) -> pl.DataFrame:
    start = start or datetime(DAY.year, DAY.month, DAY.day, 9, tzinfo=UTC)
    frames = []
    for k in range(count):
        ts = start + timedelta(minutes=k)
        frame = snapshot_frame(ts)
        atomic_write_parquet(frame, snapshot_path(root, "BTC", ts))
        frames.append(frame)
    return pl.concat(frames)


def read_all(files: list[Path]) -> pl.DataFrame:
    return pl.concat([pl.read_parquet(p) for p in files], how="diagonal_relaxed")


def test_n_files_become_one_with_the_same_rows(tmp_path: Path) -> None:
    expected = write_snapshots(tmp_path, 6)
    sources = list_parquet_files(tmp_path, "BTC")

    result = compact_day(tmp_path, "BTC", DAY)

    target = compact_path(tmp_path, "BTC", DAY)
    assert target == tmp_path / "BTC" / "date=2025-03-14" / "compact_2025-03-14.parquet"
    assert result.path == target and result.changed
    assert result.n_sources_merged == 6 and result.n_rows == 30
    assert sorted(result.removed) == sources and result.skipped == ()
    assert list_parquet_files(tmp_path, "BTC") == [target]

    merged = pl.read_parquet(target)
    assert merged.schema == pl.Schema(HARVEST_SCHEMA)
    key = ["snapshot_ts", "instrument_name"]
    assert merged.equals(expected.sort(key))  # same rows, sorted
    meta = pq.read_metadata(target)
    column = meta.row_group(0).column(0)
    assert column.compression == "LZ4" and column.statistics is not None  # PARQUET_COMPRESSION
    assert column.statistics.has_min_max
    listed = read_compacted_sources(target)
    assert sorted(e["name"] for e in listed) == sorted(p.name for p in sources)
    assert SOURCES_METADATA_KEY.encode() in meta.metadata


def test_corrupt_file_is_left_in_place_and_reported(tmp_path: Path) -> None:
    expected = write_snapshots(tmp_path, 3)
    day_dir = tmp_path / "BTC" / "date=2025-03-14"
    corrupt = day_dir / "snapshot_corrupt.parquet"
    corrupt.write_bytes(b"PAR1 this is not parquet")
    no_key = day_dir / "snapshot_nokey.parquet"
    pl.DataFrame({"mark_price": [1.0]}).write_parquet(no_key)

    result = compact_day(tmp_path, "BTC", "2025-03-14")

    assert result.n_sources_merged == 3 and result.n_rows == expected.height
    reasons = dict(result.skipped)
    assert set(reasons) == {corrupt, no_key}
    assert "missing column(s) snapshot_ts, instrument_name" in reasons[no_key]
    assert corrupt.exists() and no_key.exists()
    assert f"skipped {corrupt.name}" in result.describe()
    # still reported (and still there) on the next run, nothing else changes
    again = compact_day(tmp_path, "BTC", DAY)
    assert set(dict(again.skipped)) == {corrupt, no_key} and not again.changed


def test_compaction_is_idempotent(tmp_path: Path) -> None:
    write_snapshots(tmp_path, 4)
    first = compact_day(tmp_path, "BTC", DAY)
    assert first.path is not None
    before = (first.path.stat().st_mtime_ns, first.path.read_bytes())

    second = compact_day(tmp_path, "BTC", DAY)

    assert not second.changed and second.n_sources_merged == 0 and second.removed == ()
    assert second.n_rows == first.n_rows == 20
    assert (first.path.stat().st_mtime_ns, first.path.read_bytes()) == before


def test_late_files_are_merged_into_the_existing_compact_file(tmp_path: Path) -> None:
    early = write_snapshots(tmp_path, 2)
    compact_day(tmp_path, "BTC", DAY)
    late = write_snapshots(tmp_path, 3, start=datetime(2025, 3, 14, 20, tzinfo=UTC))

    result = compact_day(tmp_path, "BTC", DAY)

    assert result.n_sources_merged == 3 and result.n_rows == 25
    assert result.path is not None
    assert pl.read_parquet(result.path).equals(
        pl.concat([early, late]).sort("snapshot_ts", "instrument_name")
    )
    # a new generation: the old compact file is never rewritten in place
    assert result.path == compact_path(tmp_path, "BTC", DAY, generation=2)
    assert result.path.name == "compact_2025-03-14_v2.parquet"
    names = {e["name"] for e in read_compacted_sources(result.path)}
    assert len(names) == 6 and "compact_2025-03-14.parquet" in names
    assert list_parquet_files(tmp_path, "BTC") == [result.path]
    assert compact_day(tmp_path, "BTC", DAY).path == result.path  # idempotent


def test_crash_after_a_recompaction_is_not_double_counted(tmp_path: Path) -> None:
    write_snapshots(tmp_path, 2)
    first = compact_day(tmp_path, "BTC", DAY).path
    assert first is not None
    backup = tmp_path / first.name
    shutil.copy2(first, backup)
    write_snapshots(tmp_path, 1, start=datetime(2025, 3, 14, 20, tzinfo=UTC))
    second = compact_day(tmp_path, "BTC", DAY).path
    shutil.copy2(backup, first)  # the old generation survived a crash

    assert effective_parquet_files(tmp_path, "BTC") == [second]
    recovered = compact_day(tmp_path, "BTC", DAY)
    assert recovered.removed == (first,) and recovered.path == second and recovered.n_rows == 15


def test_crash_between_publish_and_unlink_is_not_double_counted(tmp_path: Path) -> None:
    expected = write_snapshots(tmp_path, 3)
    backup = tmp_path / "backup"
    backup.mkdir()
    sources = list_parquet_files(tmp_path, "BTC")
    for p in sources:
        shutil.copy2(p, backup / p.name)  # keeps size and mtime_ns
    compact_day(tmp_path, "BTC", DAY)
    for p in sources:  # as if the compactor died after the rename, before unlinking
        shutil.copy2(backup / p.name, p)

    visible = list_parquet_files(tmp_path, "BTC")
    assert len(visible) == 4  # a naive reader would count every row twice
    effective = effective_parquet_files(tmp_path, "BTC")
    assert effective == [compact_path(tmp_path, "BTC", DAY)]
    assert read_all(effective).height == expected.height

    recovered = compact_day(tmp_path, "BTC", DAY)
    assert recovered.n_sources_merged == 0 and sorted(recovered.removed) == sources
    assert recovered.n_rows == expected.height
    assert list_parquet_files(tmp_path, "BTC") == effective


def test_a_new_file_reusing_a_merged_name_is_not_hidden(tmp_path: Path) -> None:
    write_snapshots(tmp_path, 2)
    (name,) = {p.name for p in list_parquet_files(tmp_path, "BTC")[:1]}
    compact_day(tmp_path, "BTC", DAY)
    reused = tmp_path / "BTC" / "date=2025-03-14" / name
    atomic_write_parquet(snapshot_frame(datetime(2025, 3, 14, 23, tzinfo=UTC), n=7), reused)

    assert reused in effective_parquet_files(tmp_path, "BTC")
    result = compact_day(tmp_path, "BTC", DAY)
    assert result.n_sources_merged == 1 and result.n_rows == 17


def test_timestamps_are_normalized_to_ms_utc(tmp_path: Path) -> None:
    day_dir = tmp_path / "BTC" / "date=2025-03-14"
    naive_ns = snapshot_frame(datetime(2025, 3, 14, 9, tzinfo=UTC)).with_columns(
        pl.col("snapshot_ts").dt.replace_time_zone(None).cast(pl.Datetime("ns"))
    )
    atomic_write_parquet(naive_ns, day_dir / "imported.parquet")
    write_snapshots(tmp_path, 1, start=datetime(2025, 3, 14, 10, tzinfo=UTC))

    result = compact_day(tmp_path, "BTC", DAY)

    assert result.path is not None
    merged = pl.read_parquet(result.path)
    assert merged.schema["snapshot_ts"] == pl.Datetime("ms", "UTC")
    assert merged["snapshot_ts"].unique().sort().to_list() == [
        datetime(2025, 3, 14, 9, tzinfo=UTC),
        datetime(2025, 3, 14, 10, tzinfo=UTC),
    ]


def test_compact_all_skips_today(tmp_path: Path) -> None:
    for day in (date(2025, 3, 12), date(2025, 3, 13), date(2025, 3, 14)):
        write_snapshots(tmp_path, 2, start=datetime(day.year, day.month, day.day, 12, tzinfo=UTC))

    results = compact_all(tmp_path, "BTC", today=date(2025, 3, 14))

    assert [r.day for r in results] == [date(2025, 3, 12), date(2025, 3, 13)]
    assert all(r.n_sources_merged == 2 for r in results)
    today_files = list((tmp_path / "BTC" / "date=2025-03-14").glob("*.parquet"))
    assert len(today_files) == 2  # untouched
    everything = compact_all(tmp_path, "BTC", older_than_today=False, today=date(2025, 3, 14))
    assert [r.changed for r in everything] == [False, False, True]


def test_bad_input(tmp_path: Path) -> None:
    with pytest.raises(NoDataError, match="no partition for BTC on 2025-03-14"):
        compact_day(tmp_path, "BTC", DAY)
    with pytest.raises(NoDataError, match="no harvested data for ETH"):
        compact_all(tmp_path, "ETH")
    with pytest.raises(InvalidInputError, match="`underlying` must be one of BTC, ETH; got 'XRP'"):
        compact_day(tmp_path, "XRP", DAY)
    with pytest.raises(InvalidInputError, match="`date` must be YYYY-MM-DD; got '14/03/2025'"):
        compact_day(tmp_path, "BTC", "14/03/2025")


def test_unreadable_compact_file_is_never_overwritten(tmp_path: Path) -> None:
    write_snapshots(tmp_path, 2)
    target = compact_path(tmp_path, "BTC", DAY)
    target.write_bytes(b"garbage")

    result = compact_day(tmp_path, "BTC", DAY)

    assert not result.changed and target.read_bytes() == b"garbage"
    assert "unreadable compact file" in dict(result.skipped)[target]
    assert len(list_parquet_files(tmp_path, "BTC")) == 3


def _run_with_reader(tmp_path: Path, work: Callable[[list[int]], None]) -> tuple[list[str], int]:
    """Run `work` while a reader thread reads `effective_parquet_files` in a loop.

    `work` bumps ``committed[0]`` after rows are durably written; the reader checks
    it never sees fewer rows than were committed when it started, nor duplicates.
    """
    committed = [0]
    stop = threading.Event()
    problems: list[str] = []
    good_reads = [0]
    key = ["snapshot_ts", "instrument_name"]

    def reader() -> None:
        while not stop.is_set():
            floor = committed[0]
            try:
                files = effective_parquet_files(tmp_path, "BTC")
                frame = read_all(files) if files else pl.DataFrame()
            except FileNotFoundError:
                continue  # unlinked between listing and reading: list again
            except Exception as e:  # a torn or corrupt read is a bug
                problems.append(f"{type(e).__name__}: {e}")
                continue
            if files and (dups := frame.height - frame.unique(key).height):
                problems.append(f"{dups} rows double counted")
            if frame.height < floor:
                problems.append(f"saw {frame.height} rows, {floor} were committed")
            good_reads[0] += 1

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        work(committed)
    finally:
        stop.set()
        thread.join()
    return problems, good_reads[0]


def test_reader_sees_each_row_exactly_once_while_days_are_compacted(tmp_path: Path) -> None:
    days = [DAY - timedelta(days=d) for d in range(10, 0, -1)]

    def work(committed: list[int]) -> None:
        for day in days:
            write_snapshots(
                tmp_path, 4, start=datetime(day.year, day.month, day.day, 9, tzinfo=UTC)
            )
            committed[0] += 20
        for day in days:
            compact_day(tmp_path, "BTC", day)

    problems, reads = _run_with_reader(tmp_path, work)
    assert problems == [] and reads > 0
    assert len(list_parquet_files(tmp_path, "BTC")) == len(days)


def test_reader_sees_each_row_exactly_once_while_a_day_is_recompacted(tmp_path: Path) -> None:
    results: list[CompactResult] = []

    def work(committed: list[int]) -> None:
        start = datetime(DAY.year, DAY.month, DAY.day, 1, tzinfo=UTC)
        for round_ in range(12):
            write_snapshots(tmp_path, 2, start=start + timedelta(hours=round_))
            committed[0] += 10
            results.append(compact_day(tmp_path, "BTC", DAY))

    problems, reads = _run_with_reader(tmp_path, work)
    assert problems == [] and reads > 0
    last = results[-1].path
    assert last is not None and last.name == "compact_2025-03-14_v12.parquet"
    assert list_parquet_files(tmp_path, "BTC") == [last]
    assert pl.read_parquet(last).height == 120


def test_listing_skips_partitions_outside_the_days_asked_for(tmp_path: Path) -> None:
    base = tmp_path / "BTC"
    for name in ("date=2025-06-01", "date=2025-06-02", "date=2025-06-03", "date=2025-06-04", "misc", ".tmp"):
        (base / name).mkdir(parents=True)
        (base / name / "a.parquet").write_bytes(b"x")
    (base / "loose.parquet").write_bytes(b"x")
    (base / "date=2025-06-02" / ".a.parquet.123.tmp").write_bytes(b"x")
    got = list_parquet_files(tmp_path, "BTC", days=(date(2025, 6, 2), date(2025, 6, 3)))
    assert [p.relative_to(base).as_posix() for p in got] == [
        "date=2025-06-02/a.parquet", "date=2025-06-03/a.parquet", "loose.parquet", "misc/a.parquet"]
    everything = list_parquet_files(tmp_path, "BTC")
    assert len(everything) == 6 and everything == sorted(everything)

"""calib's own writers store expiry_ts, strike, option_type on every row, so the reader never parses their names.

The proof is the reader's: with its name parsing (`fill_from_name`) made to
fail, a window of each writer's files (the harvester's snapshots, a
`calib compact` day of minimal-layout files, a Tardis import) scans to the
same rows, and no row has a null expiry, strike or type.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import polars as pl
import pytest

import calib.data.reader as reader_mod
from calib.data.layout import atomic_write_parquet, list_parquet_files
from calib.data.reader import find_harvest_files, names_parse_more, scan_quotes
from calib.data.schema import PARSED_COLUMNS
from tests.golden_results import BENCH_END


def _no_parsing(monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(*_a: Any, **_k: Any) -> pl.LazyFrame:
        raise AssertionError("the reader parsed instrument names")

    monkeypatch.setattr(reader_mod, "fill_from_name", fail)


def _scan_without_parsing(root: Path, underlying: str, monkeypatch: pytest.MonkeyPatch) -> pl.DataFrame:
    files = list_parquet_files(root, underlying)
    assert files
    for f in files:
        assert set(PARSED_COLUMNS) <= set(pl.read_parquet_schema(f))
    ts = pl.concat([pl.read_parquet(f, columns=["snapshot_ts"]) for f in files])["snapshot_ts"]
    start, end = ts.min() - timedelta(seconds=1), ts.max() + timedelta(seconds=1)  # type: ignore[operator]
    hf = find_harvest_files(root, underlying, window_start=start, window_end=end, warmup=timedelta(0))
    assert names_parse_more(hf.quote_files())  # the parsed columns are stored
    _no_parsing(monkeypatch)
    quotes = scan_quotes(hf, with_names=True).collect()
    assert quotes.height > 0
    assert quotes.select(pl.col(*PARSED_COLUMNS).null_count()).row(0) == (0, 0, 0)
    return quotes


def test_harvester_snapshots_need_no_parsing(client, tmp_path: Path,  # type: ignore[no-untyped-def]
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    from calib.sources.harvester import harvest_once

    logs = harvest_once(client, ["BTC"], tmp_path)
    assert all(e.ok for e in logs)
    _scan_without_parsing(tmp_path, "BTC", monkeypatch)


def test_compacted_minimal_day_needs_no_parsing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from calib.data.compact import compact_day
    from calib.data.demo import DemoSpec, generate_demo_harvest

    full = tmp_path / "full"
    generate_demo_harvest(full, DemoSpec(underlyings=("BTC",), end=BENCH_END, days=0.5, step_minutes=60,
                                         files_per="snapshot", max_instruments=30))
    minimal = tmp_path / "minimal"
    for f in list_parquet_files(full, "BTC"):
        atomic_write_parquet(pl.read_parquet(f).drop(*PARSED_COLUMNS), minimal / f.relative_to(full))
    for day in (BENCH_END.date() - timedelta(days=1), BENCH_END.date()):
        compact_day(minimal, "BTC", day)
    quotes = _scan_without_parsing(minimal, "BTC", monkeypatch)
    assert quotes.height == sum(pl.read_parquet(f).height for f in list_parquet_files(full, "BTC"))


def test_tardis_import_needs_no_parsing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from calib.data.tardis import import_tardis
    from tests.test_tardis import LINES, write_csv

    chain = write_csv(tmp_path / "deribit_options_chain_2024-03-02_OPTIONS.csv.gz", LINES)
    root = tmp_path / "harvest"
    import_tardis([chain], underlying="BTC", data_root=root)
    _scan_without_parsing(root, "BTC", monkeypatch)


def test_the_check_fails_on_a_minimal_layout_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The proof above can fail: files without the columns go through the (here failing) name parsing."""
    from calib.data.demo import DemoSpec, generate_demo_harvest

    full = tmp_path / "full"
    generate_demo_harvest(full, DemoSpec(underlyings=("BTC",), end=BENCH_END, days=0.2, step_minutes=60,
                                         max_instruments=20))
    for f in list_parquet_files(full, "BTC"):
        atomic_write_parquet(pl.read_parquet(f).drop(*PARSED_COLUMNS), f)
    with pytest.raises(AssertionError):
        _scan_without_parsing(full, "BTC", monkeypatch)

"""A minimal-layout harvest with unparsable names is read once per pass, not again with `parse_names`.

Files without expiry_ts, strike, option_type have them parsed from the name on
every read; a second read with `parse_names=True` (meant for files that store
those columns with nulls) gives the same rows again, so the in-memory run, the
chunked run and `read_harvest` skip it there, and keep it where files store the
columns (the full layout with null gaps).
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import polars as pl
import pytest

import calib.calibration as calibration_mod
import calib.data.reader as reader_mod
import calib.streaming as streaming_mod
from calib.data.layout import atomic_write_parquet, list_parquet_files
from tests.golden_results import BENCH_END, flatten

JUNK = ("BTC-PERPETUAL", "BTC-27JUN25-1.2.3-C")  # names the reader cannot parse


@pytest.fixture(scope="module")
def harvests(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The same small harvest with junk-named rows: `full` stores expiry/strike/type (null on the junk rows),
    `minimal` does not."""
    from calib.data.demo import DemoSpec, generate_demo_harvest

    tmp = tmp_path_factory.mktemp("junk")
    src = tmp / "src"
    generate_demo_harvest(src, DemoSpec(underlyings=("BTC",), end=BENCH_END, days=3, step_minutes=60,
                                        max_instruments=40))
    roots = {"full": tmp / "full", "minimal": tmp / "minimal"}
    for f in sorted(list_parquet_files(src, "BTC")):
        frame = pl.read_parquet(f)
        junk = frame.head(len(JUNK)).with_columns(
            pl.Series("instrument_name", JUNK),
            *(pl.lit(None).cast(frame.schema[c]).alias(c) for c in ("expiry_ts", "strike", "option_type")))
        both = pl.concat([frame, junk])
        atomic_write_parquet(both, roots["full"] / f.relative_to(src))
        atomic_write_parquet(both.drop("expiry_ts", "strike", "option_type"), roots["minimal"] / f.relative_to(src))
    return roots


def _run(root: Path, *, chunked: bool) -> dict[str, Any]:
    from calib.calibration import run_historical_calibration_from_harvest
    from calib.config import CalibrationConfig, HarvestConfig

    cfg = CalibrationConfig(underlying="BTC", source="harvested", lookback_days=2.0, multiplier_tested=1.0,
                            harvest=HarvestConfig(data_root=root, end_time=BENCH_END))
    result = run_historical_calibration_from_harvest(cfg, chunk_threshold_rows=1 if chunked else None)
    return flatten(result.to_dict())


def _counting(monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """Record the `parse_names` of every chunk scan the calibration builds."""
    calls: list[bool] = []
    real = reader_mod.scan_quotes

    def scan(*args: Any, **kwargs: Any) -> pl.LazyFrame:
        calls.append(bool(kwargs.get("parse_names", False)))
        return real(*args, **kwargs)

    monkeypatch.setattr(calibration_mod, "scan_quotes", scan)
    monkeypatch.setattr(streaming_mod, "scan_quotes", scan)
    return calls


@pytest.mark.parametrize("chunked", [False, True], ids=["in_memory", "chunked"])
def test_minimal_layout_names_are_not_parsed_twice(harvests: dict[str, Path], chunked: bool,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    calls = _counting(monkeypatch)
    got = _run(harvests["minimal"], chunked=chunked)
    assert got["data_quality.excluded.unparsable_instrument"] > 0
    assert calls and not any(calls), "a minimal-layout window was read again with parse_names"
    if chunked:
        assert got["data_quality.passes"] == 2  # prepare + score, no repeated first pass


@pytest.mark.parametrize("chunked", [False, True], ids=["in_memory", "chunked"])
def test_full_layout_with_null_gaps_still_parses_and_both_layouts_agree(
        harvests: dict[str, Path], chunked: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    minimal = _run(harvests["minimal"], chunked=chunked)
    calls = _counting(monkeypatch)
    full = _run(harvests["full"], chunked=chunked)
    assert any(calls), "files storing the columns with nulls are read again with parse_names"
    skip = {"data_quality.passes", "data_quality.columns_missing", "data_root"}
    diff = {k for k in full.keys() | minimal.keys()
            if k not in skip and not k.startswith(("timings_s", "run_id", "created_at", "data_quality.columns"))
            and full.get(k) != minimal.get(k)}
    assert not diff, sorted(diff)[:10]


def test_read_harvest_reads_a_minimal_window_once(harvests: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[bool] = []
    real = reader_mod.scan_quotes

    def scan(*args: Any, **kwargs: Any) -> pl.LazyFrame:
        calls.append(bool(kwargs.get("parse_names", False)))
        return real(*args, **kwargs)

    monkeypatch.setattr(reader_mod, "scan_quotes", scan)
    read = reader_mod.read_harvest(harvests["minimal"], "BTC", window_start=BENCH_END - timedelta(days=2),
                                   window_end=BENCH_END)
    assert read.quotes.filter(pl.col("instrument_name").is_in(JUNK)).height > 0
    assert calls == [False]

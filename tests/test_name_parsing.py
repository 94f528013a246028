"""Instrument names parsed once per distinct name; both harvest layouts give the results recorded before."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from hypothesis import given
from hypothesis import strategies as st

from calib.data.layout import atomic_write_parquet
from calib.data.schema import parse_instrument_exprs, parse_instrument_names
from tests.golden_results import BUNDLE, bench_spec_harvest, cases, run_case

GOLDEN = Path(__file__).resolve().parent / "data" / "golden_results.json"


def _per_row(names: pl.Series) -> pl.DataFrame:
    """The reference: the regex on every row."""
    return pl.DataFrame({"n": names}).select(
        **{c: e for c, e in parse_instrument_exprs(pl.col("n")).items() if c != "currency"})


def test_decimal_strikes_parse() -> None:
    got = parse_instrument_names(pl.Series(["ETH-3JAN25-3250.5-P", "ETH-1JAN25-2d5-C", "BTC-27DEC24-100000-C"]))
    assert got["strike"].to_list() == [3250.5, 2.5, 100000.0]
    assert got["option_type"].to_list() == ["P", "C", "C"]
    assert [t.isoformat() for t in got["expiry_ts"]] == [
        "2025-01-03T08:00:00+00:00", "2025-01-01T08:00:00+00:00", "2024-12-27T08:00:00+00:00"]


def test_unparsable_names_give_nulls() -> None:
    got = parse_instrument_names(pl.Series(["BTC-27DEC24-1.2.3-C", "BTC-27DEC24-100000-X", "", None, "ETH-3JAN25-.5-P"],
                                           dtype=pl.String))
    assert got.null_count().row(0) == (5, 5, 5)


_NAME = st.builds(
    lambda und, day, mon, yy, strike, frac, kind: f"{und}-{day}{mon}{yy:02d}-{strike}{frac}-{kind}",
    st.sampled_from(["BTC", "ETH", "btc"]), st.integers(1, 31), st.sampled_from(["JAN", "FEB", "DEC", "XYZ"]),
    st.integers(0, 99), st.integers(0, 200_000), st.sampled_from(["", ".5", "d25", ".", "d"]),
    st.sampled_from(["C", "P", "Q"]))


@given(st.lists(st.one_of(_NAME, st.none(), st.text(max_size=12)), max_size=60), st.integers(1, 5))
def test_distinct_parse_equals_per_row_regex(names: list[str | None], repeat: int) -> None:
    series = pl.Series(names * repeat, dtype=pl.String)
    assert parse_instrument_names(series).equals(_per_row(series))


def _minimal(src: Path, dst: Path) -> Path:
    """`src` without expiry_ts, strike, option_type (SPEC section 2's minimal layout), same footers."""
    for f in sorted(src.rglob("*.parquet")):
        atomic_write_parquet(pl.read_parquet(f).drop("expiry_ts", "strike", "option_type"), dst / f.relative_to(src))
    return dst


def _assert_same(got: dict[str, Any], want: dict[str, Any], where: str) -> None:
    assert got.keys() == want.keys(), where
    for k, w in want.items():
        g = got[k]
        if isinstance(w, float) and isinstance(g, float) and not (math.isnan(w) and math.isnan(g)):
            # 1e-9 relative, or 1e-9 absolute (pct / vol-point / multiplier units) for signed sums that
            # nearly cancel (a band's bias_pct of -0.036): their last digits move with the CPU's SIMD
            # summation order (2e-9 relative, 7e-11 absolute between two machines on one build).
            assert g == pytest.approx(w, rel=1e-9, abs=1e-9), f"{where}: {k}"
        else:
            assert g == w, f"{where}: {k}"


@pytest.fixture(scope="module")
def layouts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Path]]:
    if not BUNDLE.is_dir():
        pytest.skip("bundled data set not present")
    tmp = tmp_path_factory.mktemp("layouts")
    bench = bench_spec_harvest(tmp / "bench")
    full = {name: root for name, root, *_ in cases(bench)}
    minimal = {"bundle_BTC": _minimal(BUNDLE, tmp / "bundle_min"), "bench_BTC_2d": _minimal(bench, tmp / "bench_min")}
    minimal["bundle_ETH"] = minimal["bundle_BTC"]
    return {"full": full, "minimal": minimal}


@pytest.mark.parametrize("layout", ["full", "minimal"])
@pytest.mark.parametrize("chunked", [False, True], ids=["in_memory", "chunked"])
def test_results_equal_those_recorded_before(layouts: dict[str, dict[str, Path]], layout: str,
                                             chunked: bool) -> None:
    golden = json.loads(GOLDEN.read_text())
    for name, _, und, end, days in cases(Path()):
        got = run_case(layouts[layout][name], und, end, days, chunk_threshold_rows=1 if chunked else None)
        key = name + ("_chunked" if chunked else "")
        _assert_same(got, golden[key], f"{layout} {key}")


def test_compaction_writes_the_parsed_columns(tmp_path: Path) -> None:
    """A day written by another tool in the minimal layout comes out of `calib compact` with expiry, strike, type."""
    from calib.data.compact import compact_day
    from calib.data.demo import DemoSpec, generate_demo_harvest
    from calib.data.layout import list_parquet_files
    from tests.golden_results import BENCH_END

    full = tmp_path / "full"
    generate_demo_harvest(full, DemoSpec(underlyings=("BTC",), end=BENCH_END, days=0.5, step_minutes=60,
                                         files_per="snapshot", max_instruments=50))
    minimal = _minimal(full, tmp_path / "minimal")
    day = BENCH_END.date()
    assert "strike" not in pl.read_parquet_schema(list_parquet_files(minimal, "BTC")[0])
    compact_day(minimal, "BTC", day)
    (compacted,) = list_parquet_files(minimal, "BTC", days=(day, day))
    got = pl.read_parquet(compacted)
    want = pl.concat([pl.read_parquet(f) for f in list_parquet_files(full, "BTC", days=(day, day))])
    key = ["snapshot_ts", "instrument_name"]
    cols = [*key, "expiry_ts", "strike", "option_type"]
    assert got.height == want.height > 0
    assert got.select(cols).sort(key).equals(want.select(cols).sort(key))


def test_live_chain_frames_carry_the_parsed_columns(fake) -> None:  # type: ignore[no-untyped-def]
    """What the harvester writes (`DeribitClient.option_chain`) has expiry, strike and type for every row."""
    from calib.sources.deribit import DeribitClient

    with DeribitClient(base_url=fake.base_url, timeout_s=2.0, max_retries=1, backoff_s=0.001) as client:
        chain = client.option_chain("BTC")
    assert chain.height > 0
    assert chain.select(pl.col("expiry_ts", "strike", "option_type").null_count()).row(0) == (0, 0, 0)
    assert chain.select("expiry_ts", "strike", "option_type").equals(parse_instrument_names(chain["instrument_name"]))

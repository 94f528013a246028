"""Tardis options_chain importer: boundaries, last-known state, skips, schema, index."""

from __future__ import annotations

import gzip
from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl
import pytest

from calib.data.schema import HARVEST_SCHEMA
from calib.data.tardis import (
    TARDIS_OPTIONS_CHAIN_COLUMNS,
    TardisImportResult,
    import_tardis,
    parse_every,
)
from calib.errors import InvalidInputError, NoDataError

HEADER = (
    "exchange,symbol,timestamp,local_timestamp,type,strike_price,expiration,open_interest,"
    "last_price,bid_price,bid_amount,bid_iv,ask_price,ask_amount,ask_iv,mark_price,mark_iv,"
    "underlying_index,underlying_price,delta,gamma,vega,theta,rho"
)
E1 = datetime(2024, 3, 2, 8, tzinfo=UTC)  # BTC-2MAR24 expires inside the file
E2 = datetime(2024, 3, 29, 8, tzinfo=UTC)
EXPIRIES = {"2MAR24": E1, "29MAR24": E2}
FWD = {"2MAR24": 61_000.0, "29MAR24": 62_000.0}


def us(dt: datetime) -> int:
    return int((dt - datetime(1970, 1, 1, tzinfo=UTC)) / timedelta(microseconds=1))


def at(hh: int, mm: int, ss: float = 0.0) -> datetime:
    return datetime(2024, 3, 2, hh, mm, tzinfo=UTC) + timedelta(seconds=ss)


def row(
    symbol: str,
    t: datetime,
    mark: float | str,
    *,
    iv: float | str = 50.0,
    fwd_shift: float = 0.0,
    exchange: str = "deribit",
    ts: str | None = None,
    kind: str | None = None,
    bid_iv: float | str = 48.0,
) -> str:
    """One line in the exact Tardis options_chain layout (prices in coin, IVs in percent)."""
    coin, expiry_code, strike, cp = symbol.split("-")
    expiry = EXPIRIES.get(expiry_code, E2)
    fwd = FWD.get(expiry_code, 3_000.0) + fwd_shift
    index_name = ("SYN." if expiry_code == "2MAR24" else "") + f"{coin}-{expiry_code}"
    stamp = str(us(t)) if ts is None else ts
    quoted = isinstance(mark, float) and mark > 0
    fields = {
        "exchange": exchange,
        "symbol": symbol,
        "timestamp": stamp,
        "local_timestamp": str(us(t) + 1_500),
        "type": kind or ("call" if cp == "C" else "put"),
        "strike_price": strike,
        "expiration": str(us(expiry)),
        "open_interest": "12.5",
        "last_price": "",
        "bid_price": f"{float(mark) * 0.95:.6f}" if quoted else "",
        "bid_amount": "1.0",
        "bid_iv": str(bid_iv),
        "ask_price": f"{float(mark) * 1.05:.6f}" if quoted else "",
        "ask_amount": "2.0",
        "ask_iv": "52.0",
        "mark_price": str(mark),
        "mark_iv": str(iv),
        "underlying_index": index_name,
        "underlying_price": str(fwd),
        "delta": "0.5",
        "gamma": "0.0001",
        "vega": "12.3",
        "theta": "-45.6",
        "rho": "0.1",
    }
    assert tuple(fields) == TARDIS_OPTIONS_CHAIN_COLUMNS
    return ",".join(fields.values())


A, B = "BTC-2MAR24-60000-C", "BTC-2MAR24-60000-P"  # expire 08:00
C, D, E = "BTC-29MAR24-65000-C", "BTC-29MAR24-55000-P", "BTC-29MAR24-70000-C"

# File order = arrival order; E's 08:05:03 update arrives before its 08:04:58 one.
LINES: list[str] = [
    row(A, at(7, 51, 59.5), 0.0199),  # first row: first boundary is 07:55
    row(A, at(7, 52), 0.02, fwd_shift=1.0),
    row(B, at(7, 52), 0.005),
    row(C, at(7, 52), 0.03),
    row(D, at(7, 52), 0.01),
    row(E, at(7, 52), 0.01),
    row("ETH-29MAR24-3500-C", at(7, 53), 0.05),  # other_underlying
    row("BTC_USDC-29MAR24-65000-C", at(7, 53), 1800.0),  # linear_usdc
    row(C, at(7, 53), 0.5, exchange="okex"),  # other_exchange
    row(A, at(7, 54, 30), 0.021, fwd_shift=2.0),
    row(C, at(7, 56), 0.031),
    row(C, at(7, 56, 30), "abc"),  # unparsable mark
    row(C, at(7, 56, 40), 0.5, ts=""),  # unparsable timestamp
    row(C, at(7, 56, 50), 0.5, kind="future"),  # unparsable type
    row(C, at(7, 56, 55), 0.5, bid_iv="n/a"),  # unparsable optional number
    "deribit,BTC-29MAR24-65000-C,123",  # wrong field count: unparsable
    row("BTC_USDC-29MAR24-60000-P", at(7, 57), 900.0),  # linear_usdc
    row("ETH-29MAR24-3000-P", at(7, 57), 0.02),  # other_underlying
    row(D, at(7, 58), 0.0),  # zero_mark: D leaves the chain
    row(C, at(8, 0), 0.0315),  # exactly on the boundary: belongs to 08:00
    row(A, at(8, 1), 0.001),  # after its expiry: never shown again
    row(C, at(8, 3), 0.032),
    row(E, at(8, 5, 3), 0.011),
    row(E, at(8, 4, 58), 0.0105),  # late by 5 s, still in the 08:05 snapshot
    row(D, at(8, 6), 0.012),  # D is back
    row(C, at(8, 7), 0.033),
    row(C, at(8, 11, 30), 0.034),  # after the last boundary (08:10)
]


def write_csv(path: Path, lines: list[str], *, gz: bool = True) -> Path:
    text = HEADER + "\n" + "\n".join(lines) + "\n"
    if gz:
        with gzip.open(path, "wt") as fh:
            fh.write(text)
    else:
        path.write_text(text)
    return path


def read_back(root: Path) -> pl.DataFrame:
    return pl.read_parquet(root / "BTC" / "**" / "*.parquet").sort("snapshot_ts", "instrument_name")


def snapshot(df: pl.DataFrame, hh: int, mm: int) -> dict[str, dict[str, object]]:
    rows = df.filter(pl.col("snapshot_ts") == at(hh, mm)).to_dicts()
    return {r["instrument_name"]: r for r in rows}


@pytest.fixture
def chain_file(tmp_path: Path) -> Path:
    return write_csv(tmp_path / "deribit_options_chain_2024-03-02_OPTIONS.csv.gz", LINES)


@pytest.fixture
def imported(chain_file: Path, tmp_path: Path) -> tuple[TardisImportResult, pl.DataFrame]:
    root = tmp_path / "harvest"
    result = import_tardis([chain_file], underlying="BTC", data_root=root)
    return result, read_back(root)


def test_boundaries_are_multiples_of_every(
    imported: tuple[TardisImportResult, pl.DataFrame],
) -> None:
    result, df = imported
    boundaries = df.get_column("snapshot_ts").unique().sort().to_list()
    assert boundaries == [at(7, 55), at(8, 0), at(8, 5), at(8, 10)]
    assert result.snapshots_written == 4
    assert result.first_snapshot == at(7, 55)
    assert result.last_snapshot == at(8, 10)


def test_last_known_state_per_boundary(imported: tuple[TardisImportResult, pl.DataFrame]) -> None:
    _, df = imported
    assert snapshot(df, 7, 55)[A]["mark_price"] == pytest.approx(0.021)
    assert snapshot(df, 7, 55)[C]["mark_price"] == pytest.approx(0.03)
    assert snapshot(df, 8, 0)[C]["mark_price"] == pytest.approx(0.0315)  # row exactly at 08:00
    assert snapshot(df, 8, 5)[C]["mark_price"] == pytest.approx(0.032)  # 08:03, not 08:07
    assert snapshot(df, 8, 10)[C]["mark_price"] == pytest.approx(0.033)  # 08:07, not 08:11:30
    assert snapshot(df, 8, 5)[E]["mark_price"] == pytest.approx(0.0105)  # out of file order
    assert snapshot(df, 8, 10)[E]["mark_price"] == pytest.approx(0.011)


def test_expired_and_zero_mark_instruments_leave_the_chain(
    imported: tuple[TardisImportResult, pl.DataFrame],
) -> None:
    _, df = imported
    assert set(snapshot(df, 7, 55)) == {A, B, C, D, E}
    assert set(snapshot(df, 8, 0)) == {C, E}  # A, B expired at 08:00; D's mark went to 0
    assert set(snapshot(df, 8, 5)) == {C, E}
    assert set(snapshot(df, 8, 10)) == {C, D, E}
    assert (df.get_column("expiry_ts") > df.get_column("snapshot_ts")).all()


def test_skips_are_counted_by_reason(imported: tuple[TardisImportResult, pl.DataFrame]) -> None:
    result, _ = imported
    assert result.skipped == {
        "linear_usdc": 2,
        "other_exchange": 1,
        "other_underlying": 2,
        "unparsable": 5,
        "zero_mark": 1,
    }
    assert result.rows_read == len(LINES)
    assert result.instruments == 5
    assert result.files_written == 1


def test_schema_units_and_fields(imported: tuple[TardisImportResult, pl.DataFrame]) -> None:
    _, df = imported
    assert dict(df.schema) == HARVEST_SCHEMA
    first = snapshot(df, 7, 55)
    assert first[A]["mark_iv"] == pytest.approx(50.0)  # percent, as Tardis/Deribit report it
    assert first[A]["bid_iv"] == pytest.approx(48.0)
    assert first[B]["option_type"] == "P"
    assert first[C]["option_type"] == "C"
    assert first[C]["strike"] == pytest.approx(65_000.0)
    assert first[C]["expiry_ts"] == E2
    assert first[C]["underlying_price"] == pytest.approx(62_000.0)
    assert first[C]["open_interest"] == pytest.approx(12.5)
    assert first[C]["theta"] == pytest.approx(-45.6)
    assert first[C]["volume"] is None
    assert df.get_column("mark_iv").median() > 5.0  # type: ignore[operator]


def test_index_defaults_to_nearest_expiry_forward(
    imported: tuple[TardisImportResult, pl.DataFrame],
) -> None:
    result, df = imported
    assert result.index_source == "nearest_forward"
    index = dict(
        df.group_by("snapshot_ts")
        .agg(pl.col("index_price").unique())
        .select("snapshot_ts", pl.col("index_price").list.first())
        .iter_rows()
    )
    # 07:55: nearest expiry is 2MAR24; its latest update (A at 07:54:30) carries 61002.
    assert index[at(7, 55)] == pytest.approx(61_002.0)
    assert index[at(8, 0)] == pytest.approx(62_000.0)  # 2MAR24 expired: next expiry


def test_index_from_index_file(chain_file: Path, tmp_path: Path) -> None:
    # Tardis derivative_ticker layout; ETH rows and empty index_price rows are ignored.
    lines = [
        "exchange,symbol,timestamp,local_timestamp,funding_timestamp,funding_rate,"
        "predicted_funding_rate,open_interest,last_price,index_price,mark_price",
    ]
    for t, symbol, price in [
        (at(7, 54), "BTC-PERPETUAL", "60900"),
        (at(7, 54, 30), "ETH-PERPETUAL", "3100"),
        (at(7, 59, 59), "BTC-PERPETUAL", "60950"),
        (at(8, 0, 1), "BTC-PERPETUAL", ""),
        (at(8, 4), "BTC-PERPETUAL", "61010"),
        (at(8, 9, 59), "BTC-PERPETUAL", "61020"),
        (at(8, 10, 0.5), "BTC-PERPETUAL", "99999"),
        (at(8, 10, 0.6), "BTC-PERPETUAL", "oops"),
    ]:
        lines.append(
            f"deribit,{symbol},{us(t)},{us(t) + 10},,0.0001,0.0001,1e9,60000,{price},60001"
        )
    index_file = tmp_path / "deribit_derivative_ticker.csv"
    index_file.write_text("\n".join(lines) + "\n")
    root = tmp_path / "harvest"
    result = import_tardis([chain_file], underlying="BTC", data_root=root, index_file=index_file)
    df = read_back(root)
    assert result.index_source == "index_file"
    assert result.skipped["index_other_symbol"] == 1
    assert result.skipped["index_unparsable"] == 1
    got = dict(df.select("snapshot_ts", "index_price").unique().iter_rows())
    assert got == {
        at(7, 55): pytest.approx(60_900.0),
        at(8, 0): pytest.approx(60_950.0),
        at(8, 5): pytest.approx(61_010.0),
        at(8, 10): pytest.approx(61_020.0),
    }


def test_simple_index_file_with_price_column_and_staleness(
    chain_file: Path, tmp_path: Path
) -> None:
    index_file = tmp_path / "index.csv"
    index_file.write_text(f"timestamp,price\n{us(at(7, 30))},60000\n{us(at(8, 4))},61000\n")
    root = tmp_path / "harvest"
    result = import_tardis([chain_file], underlying="BTC", data_root=root, index_file=index_file)
    got = dict(read_back(root).select("snapshot_ts", "index_price").unique().iter_rows())
    # Values older than max(every, 5 min) are stale: left null and counted.
    assert got == {at(7, 55): None, at(8, 0): None, at(8, 5): 61_000.0, at(8, 10): None}
    assert result.snapshots_without_index == 3


def test_index_fallback_none_leaves_index_null(chain_file: Path, tmp_path: Path) -> None:
    root = tmp_path / "harvest"
    result = import_tardis([chain_file], underlying="BTC", data_root=root, index_fallback="none")
    assert result.index_source == "none"
    assert read_back(root).get_column("index_price").null_count() == read_back(root).height


def test_batch_size_never_changes_the_output(chain_file: Path, tmp_path: Path) -> None:
    outputs = []
    for batch_rows in (1, 3, 50, 500_000):
        root = tmp_path / f"harvest_{batch_rows}"
        result = import_tardis(
            [chain_file], underlying="BTC", data_root=root, batch_rows=batch_rows
        )
        outputs.append((result.skipped, result.snapshots_written, read_back(root)))
    for skipped, n, df in outputs[1:]:
        assert skipped == outputs[0][0]
        assert n == outputs[0][1]
        assert df.equals(outputs[0][2])


def test_split_files_match_one_file(chain_file: Path, tmp_path: Path) -> None:
    first = write_csv(tmp_path / "part1.csv", LINES[:12], gz=False)
    second = write_csv(tmp_path / "part2.csv.gz", LINES[12:])
    root = tmp_path / "harvest"
    result = import_tardis([first, second], underlying="BTC", data_root=root, batch_rows=4)
    whole_root = tmp_path / "whole"
    whole = import_tardis([chain_file], underlying="BTC", data_root=whole_root)
    assert read_back(root).equals(read_back(whole_root))
    assert result.skipped == whole.skipped
    assert result.rows_read == whole.rows_read


def test_rows_behind_a_written_boundary_are_out_of_order(chain_file: Path, tmp_path: Path) -> None:
    # A second file replaying 07:56 after 08:10 was written: too late to be used.
    late = write_csv(tmp_path / "late.csv", [row(C, at(7, 56), 0.9), row(C, at(8, 12), 0.035)])
    root = tmp_path / "harvest"
    result = import_tardis([chain_file, late], underlying="BTC", data_root=root)
    assert result.skipped["out_of_order"] == 1
    assert snapshot(read_back(root), 8, 0)[C]["mark_price"] == pytest.approx(0.0315)


def test_zero_reorder_window_counts_late_rows_across_batches(
    chain_file: Path, tmp_path: Path
) -> None:
    root = tmp_path / "harvest"
    result = import_tardis(
        [chain_file], underlying="BTC", data_root=root, batch_rows=1, reorder_window=timedelta(0)
    )
    assert result.skipped["out_of_order"] == 1  # E's 08:04:58 row arrives after 08:05 was written
    assert snapshot(read_back(root), 8, 5)[E]["mark_price"] == pytest.approx(0.01)


def test_gap_without_data_writes_no_stale_snapshots(tmp_path: Path) -> None:
    lines = [row(C, at(7, 51), 0.03), row(C, at(7, 56), 0.031), row(C, at(9, 1), 0.04)]
    path = write_csv(tmp_path / "gap.csv", lines)
    root = tmp_path / "harvest"
    result = import_tardis([path], underlying="BTC", data_root=root, reorder_window=timedelta(0))
    boundaries = read_back(root).get_column("snapshot_ts").to_list()
    assert boundaries == [at(7, 55), at(8, 0)]  # 08:05..09:00 had no rows; 09:05 is after the data
    assert result.intervals_without_data == 12


def test_files_split_by_day_and_window(tmp_path: Path) -> None:
    lines = [row(C, at(7, 51) + timedelta(minutes=5 * k), 0.03) for k in range(30)]
    lines.append(row(C, datetime(2024, 3, 3, 0, 2, tzinfo=UTC), 0.03))
    lines.append(row(C, datetime(2024, 3, 3, 0, 6, tzinfo=UTC), 0.03))
    path = write_csv(tmp_path / "days.csv.gz", lines)
    root = tmp_path / "harvest"
    result = import_tardis(
        [path], underlying="BTC", data_root=root, every=parse_every("5m"), snapshots_per_file=12
    )
    names = sorted(str(p.relative_to(root)) for p in result.files)
    assert names == [
        "BTC/date=2024-03-02/tardis_20240302T075500Z.parquet",  # window 07:00-08:00 (from 07:55)
        "BTC/date=2024-03-02/tardis_20240302T080000Z.parquet",
        "BTC/date=2024-03-02/tardis_20240302T090000Z.parquet",
        "BTC/date=2024-03-02/tardis_20240302T100000Z.parquet",  # last boundary 10:15
        "BTC/date=2024-03-03/tardis_20240303T000500Z.parquet",  # after a gap, a new day
    ]
    assert result.snapshots_written == 30 + 1  # 07:55..10:20 (last row 10:16), then 00:05
    assert not list(root.rglob(".*"))  # no temp files left behind


def test_progress_lines(chain_file: Path, tmp_path: Path) -> None:
    lines: list[str] = []
    import_tardis([chain_file], underlying="BTC", data_root=tmp_path / "h", progress=lines.append)
    assert lines[0].startswith("tardis: reading ")
    assert lines[-1].endswith("(done)")
    assert "4 snapshots written" in lines[-1]


def test_eth_import_skips_btc(chain_file: Path, tmp_path: Path) -> None:
    root = tmp_path / "harvest"
    result = import_tardis([chain_file], underlying="eth", data_root=root)
    # BTC_USDC is another underlying here; the okex row and the short line keep their reasons.
    assert result.skipped["other_underlying"] == len(LINES) - 2 - 1 - 1
    df = pl.read_parquet(root / "ETH" / "**" / "*.parquet")
    # ETH rows end at 07:57: only the 07:55 boundary is covered by ETH data.
    assert df.get_column("snapshot_ts").unique().to_list() == [at(7, 55)]
    assert df.get_column("instrument_name").to_list() == ["ETH-29MAR24-3500-C"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("5m", timedelta(minutes=5)),
        ("1h", timedelta(hours=1)),
        ("30s", timedelta(seconds=30)),
        ("300", timedelta(seconds=300)),
        (" 2D ", timedelta(days=2)),
    ],
)
def test_parse_every(text: str, expected: timedelta) -> None:
    assert parse_every(text) == expected


@pytest.mark.parametrize("text", ["", "0m", "5x", "-5m", "1.5h", "m"])
def test_parse_every_rejects(text: str) -> None:
    with pytest.raises(InvalidInputError, match="`every` must be a positive interval"):
        parse_every(text)


def test_bad_arguments_and_files(chain_file: Path, tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError, match="`underlying` must be one of BTC, ETH; got 'SOL'"):
        import_tardis([chain_file], underlying="SOL", data_root=tmp_path)
    with pytest.raises(InvalidInputError, match="`paths` must name at least one"):
        import_tardis([], underlying="BTC", data_root=tmp_path)
    with pytest.raises(NoDataError, match="not found"):
        import_tardis([tmp_path / "missing.csv.gz"], underlying="BTC", data_root=tmp_path)
    wrong = tmp_path / "trades.csv"
    wrong.write_text("exchange,symbol,timestamp,local_timestamp,id,side,price,amount\n")
    with pytest.raises(InvalidInputError, match="missing column"):
        import_tardis([wrong], underlying="BTC", data_root=tmp_path)
    broken = tmp_path / "broken.csv.gz"
    broken.write_bytes(gzip.compress((HEADER + "\n" + LINES[0] + "\n").encode())[:-30])
    with pytest.raises(InvalidInputError, match="cannot read"):
        import_tardis([broken], underlying="BTC", data_root=tmp_path)

"""DeribitClient against a real local HTTP server (tests/fake_deribit.py)."""

from __future__ import annotations

import socket
import time
from datetime import UTC, datetime, timedelta

import httpx
import polars as pl
import pytest

from calib.data.schema import HARVEST_SCHEMA
from calib.errors import InvalidInputError, SourceError
from calib.sources.deribit import DeribitClient
from tests.fake_deribit import INDEX_USD, Fail, FakeDeribit, book_entries

BOOK = "public/get_book_summary_by_currency"
INDEX = "public/get_index_price"


def test_book_summary_fields_and_units(client: DeribitClient, fake: FakeDeribit) -> None:
    snap = datetime(2025, 1, 2, 3, 4, 5, 678_901, tzinfo=UTC)
    frame = client.book_summary("BTC", snapshot_ts=snap)

    assert frame.schema == pl.Schema(HARVEST_SCHEMA)
    raw = {
        e["instrument_name"]: e for e in book_entries("BTC") if "_USDC" not in e["instrument_name"]
    }
    assert frame.height == len(raw) == 12  # the linear BTC_USDC option is skipped
    assert not frame["instrument_name"].str.contains("_USDC").any()
    assert frame["snapshot_ts"].unique().to_list() == [
        datetime(2025, 1, 2, 3, 4, 5, 678_000, tzinfo=UTC)
    ]

    row = frame.row(0, named=True)
    src = raw[row["instrument_name"]]
    assert row["mark_price"] == src["mark_price"]  # coin, untouched
    assert row["mark_iv"] == pytest.approx(src["mark_iv"])  # percent, untouched
    assert row["mark_iv"] > 1.0
    assert (row["bid_iv"], row["ask_iv"]) == (50.0, 55.0)
    assert row["underlying_price"] == src["underlying_price"]  # USD forward
    assert row["open_interest"] == 150.5 and row["volume"] == 12.0
    assert row["index_price"] is None  # filled by the harvester
    assert row["expiry_ts"].hour == 8 and row["expiry_ts"].tzinfo is not None
    name_strike = float(row["instrument_name"].split("-")[2])
    assert row["strike"] == name_strike
    assert row["option_type"] == row["instrument_name"][-1]
    assert frame.filter(pl.col("ask_price").is_null()).height == 4  # nullable quotes survive
    assert fake.requests[-1] == (BOOK, {"currency": "BTC", "kind": "option"})


def test_book_summary_eth_and_default_timestamp(client: DeribitClient) -> None:
    before = datetime.now(UTC) - timedelta(seconds=1)
    frame = client.book_summary("ETH")
    assert frame.height == 12
    assert frame["instrument_name"].str.starts_with("ETH-").all()
    assert frame["snapshot_ts"][0] >= before


def test_index_price_and_history(client: DeribitClient, fake: FakeDeribit) -> None:
    assert client.index_price("ETH") == INDEX_USD["ETH"]
    assert fake.requests[-1] == (INDEX, {"index_name": "eth_usd"})

    end = datetime.now(UTC)
    start = end - timedelta(days=7)
    hist = client.index_history("BTC", start, end, "60")
    assert hist.columns == ["ts", "index_price"]
    assert hist.schema["ts"] == pl.Datetime("ms", "UTC")
    assert 160 <= hist.height <= 169
    assert hist["ts"].is_sorted() and hist["ts"].min() >= start - timedelta(hours=1)
    assert fake.requests[-1][1]["range"] == "1m"  # smallest range covering 7 days

    daily = client.index_history("BTC", start, end, "1D")
    assert 7 <= daily.height <= 8

    perp = client.index_history("BTC", start, end, "720", source="perpetual")
    method, params = fake.requests[-1]
    assert method == "public/get_tradingview_chart_data"
    assert params["instrument_name"] == "BTC-PERPETUAL" and params["resolution"] == "720"
    assert int(params["start_timestamp"]) == int(start.timestamp() * 1000)
    assert 14 <= perp.height <= 15


def test_bad_arguments_raise_invalid_input(client: DeribitClient) -> None:
    with pytest.raises(InvalidInputError, match="`currency` must be one of BTC, ETH; got 'SOL'"):
        client.book_summary("SOL")
    now = datetime.now(UTC)
    with pytest.raises(InvalidInputError, match="`resolution` must be one of"):
        client.index_history("BTC", now - timedelta(days=1), now, "7")
    with pytest.raises(InvalidInputError, match="must be before"):
        client.index_history("BTC", now, now - timedelta(days=1))


def test_429_then_success_is_retried(client: DeribitClient, fake: FakeDeribit) -> None:
    fake.script(INDEX, [Fail.status_code(429), Fail.status_code(429)])
    assert client.index_price("BTC") == INDEX_USD["BTC"]
    assert fake.calls(INDEX) == 3


def test_rpc_too_many_requests_is_retried(client: DeribitClient, fake: FakeDeribit) -> None:
    fake.script(INDEX, [Fail.rpc_error(10028, "too_many_requests")])
    assert client.index_price("BTC") == INDEX_USD["BTC"]
    assert fake.calls(INDEX) == 2


def test_repeated_500_exhausts_retries(client: DeribitClient, fake: FakeDeribit) -> None:
    fake.script(BOOK, [Fail.status_code(500)] * 10)
    with pytest.raises(SourceError, match=r"HTTP 500 .* after 4 attempts"):
        client.book_summary("BTC")
    assert fake.calls(BOOK) == 4  # 1 + max_retries


def test_other_4xx_is_not_retried(client: DeribitClient, fake: FakeDeribit) -> None:
    fake.script(INDEX, [Fail.status_code(404)])
    with pytest.raises(SourceError, match="HTTP 404"):
        client.index_price("BTC")
    assert fake.calls(INDEX) == 1


def test_jsonrpc_error_object_is_a_source_error(client: DeribitClient, fake: FakeDeribit) -> None:
    fake.script(BOOK, [Fail.rpc_error(-32602, "Invalid params")])
    with pytest.raises(
        SourceError,
        match=r"Deribit error for public/get_book_summary_by_currency .*-32602: Invalid params",
    ):
        client.book_summary("BTC")
    assert fake.calls(BOOK) == 1


def test_malformed_json_is_a_source_error(client: DeribitClient, fake: FakeDeribit) -> None:
    fake.script(BOOK, [Fail.malformed()])
    with pytest.raises(SourceError, match="malformed JSON"):
        client.book_summary("BTC")
    assert fake.calls(BOOK) == 1


def test_timeout_is_retried_then_a_source_error(fake: FakeDeribit) -> None:
    fake.script(INDEX, [Fail.slow(5.0)] * 3)
    with DeribitClient(base_url=fake.base_url, timeout_s=0.15, max_retries=1, backoff_s=0.001) as c:
        t0 = time.perf_counter()
        with pytest.raises(SourceError, match=r"did not answer within 0.15 s .*2 attempts"):
            c.index_price("BTC")
        assert time.perf_counter() - t0 < 2.0
    assert fake.calls(INDEX) == 2


def test_slow_once_then_success(fake: FakeDeribit) -> None:
    fake.script(INDEX, [Fail.slow(5.0)])
    with DeribitClient(base_url=fake.base_url, timeout_s=0.15, max_retries=2, backoff_s=0.001) as c:
        assert c.index_price("BTC") == INDEX_USD["BTC"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_connection_refused_is_unreachable() -> None:
    url = f"http://127.0.0.1:{_free_port()}/api/v2"
    sleeps: list[float] = []
    with DeribitClient(
        base_url=url, timeout_s=1.0, max_retries=2, backoff_s=0.01, sleep=sleeps.append
    ) as c:
        with pytest.raises(
            SourceError, match=rf"Deribit unreachable at {url}/public/get_index_price"
        ):
            c.index_price("BTC")
    # exponential backoff with jitter in [0.5, 1.5): 0.01 * 2**k
    assert len(sleeps) == 2
    assert 0.005 <= sleeps[0] < 0.015 and 0.01 <= sleeps[1] < 0.03


def test_retry_after_header_is_honoured() -> None:
    answers = iter(
        [
            httpx.Response(429, headers={"Retry-After": "0.25"}, json={"error": {"code": 10028}}),
            httpx.Response(200, json={"jsonrpc": "2.0", "result": {"index_price": 5.0}}),
        ]
    )
    sleeps: list[float] = []
    transport = httpx.MockTransport(lambda request: next(answers))
    with DeribitClient(transport=transport, backoff_s=0.001, sleep=sleeps.append) as c:
        assert c.index_price("BTC") == 5.0
    assert sleeps == [0.25]


def test_missing_result_is_a_source_error() -> None:
    transport = httpx.MockTransport(lambda request: httpx.Response(200, json={"jsonrpc": "2.0"}))
    with (
        DeribitClient(transport=transport) as c,
        pytest.raises(SourceError, match="no JSON-RPC `result`"),
    ):
        c.index_price("BTC")


def test_option_chain_fills_the_index(client: DeribitClient, fake: FakeDeribit) -> None:
    chain = client.option_chain("ETH")
    assert chain.schema == pl.Schema(HARVEST_SCHEMA)
    assert chain["index_price"].unique().to_list() == [INDEX_USD["ETH"]]
    assert [m for m, _ in fake.requests[-2:]] == [BOOK, INDEX]

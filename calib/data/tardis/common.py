"""Tardis options_chain columns, the harvest state schema and unit helpers shared by the import stages."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Literal

import polars as pl

IndexSource = Literal["index_file", "nearest_forward", "none"]
IndexFallback = Literal["nearest_forward", "none"]

TARDIS_OPTIONS_CHAIN_COLUMNS: tuple[str, ...] = (
    "exchange",
    "symbol",
    "timestamp",
    "local_timestamp",
    "type",
    "strike_price",
    "expiration",
    "open_interest",
    "last_price",
    "bid_price",
    "bid_amount",
    "bid_iv",
    "ask_price",
    "ask_amount",
    "ask_iv",
    "mark_price",
    "mark_iv",
    "underlying_index",
    "underlying_price",
    "delta",
    "gamma",
    "vega",
    "theta",
    "rho",
)
# Columns a row cannot do without; a file lacking one of them is not an options_chain file.
REQUIRED_INPUT: tuple[str, ...] = (
    "exchange",
    "symbol",
    "timestamp",
    "type",
    "strike_price",
    "expiration",
    "mark_price",
    "underlying_price",
)
REQUIRED_FLOATS: tuple[str, ...] = ("strike", "mark_price", "underlying_price")
# Nullable float columns copied as they are (same name in Tardis and in the harvest schema).
OPTIONAL_FLOATS: tuple[str, ...] = (
    "mark_iv",
    "bid_price",
    "ask_price",
    "bid_iv",
    "ask_iv",
    "open_interest",
    "delta",
    "gamma",
    "vega",
    "theta",
)
EXCHANGE = "deribit"
_US_PER_S = 1_000_000
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
PROGRESS_EVERY_ROWS = 1_000_000
MAX_BLOCK_BYTES = 1 << 20  # CSV text parsed per block (see `iter_csv_blocks`)
CHUNK_ROWS = 50_000  # raw rows typed per polars query
MIN_INDEX_TOLERANCE = timedelta(minutes=5)
EVERY_PATTERN = re.compile(r"^\s*(\d+)\s*([smhd]?)\s*$", re.IGNORECASE)
EVERY_UNITS_S = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}

# The carried per-instrument state: one row per (window, instrument) or per instrument.
STATE_SCHEMA: dict[str, pl.DataType] = {
    "ts": pl.Int64(),
    "bnd": pl.Int64(),
    "instrument_name": pl.String(),
    "expiry_us": pl.Int64(),
    "strike": pl.Float64(),
    "option_type": pl.String(),
    "mark_price": pl.Float64(),
    "underlying_price": pl.Float64(),
    **{name: pl.Float64() for name in OPTIONAL_FLOATS},
}


def to_us(delta: timedelta) -> int:
    return (delta.days * 86_400 + delta.seconds) * _US_PER_S + delta.microseconds


def add_count(counter: dict[str, int], key: str, n: int) -> None:
    if n:
        counter[key] = counter.get(key, 0) + n


# --------------------------------------------------------------------------- state machine


def us_to_datetime(us: int) -> datetime:
    return _EPOCH + timedelta(microseconds=us)

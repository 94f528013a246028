"""The harvested-snapshot contract (SPEC section 2): columns, types, name parsing."""

from __future__ import annotations

import polars as pl

REQUIRED_COLUMNS: tuple[str, ...] = (
    "snapshot_ts",
    "instrument_name",
    "mark_price",
    "underlying_price",
)
# index_price is required for RV; without it RV falls back (data quality degraded).
OPTIONAL_COLUMNS: tuple[str, ...] = (
    "expiry_ts",
    "strike",
    "option_type",
    "mark_iv",
    "index_price",
    "bid_price",
    "ask_price",
    "bid_iv",
    "ask_iv",
    "open_interest",
    "volume",
    "interest_rate",
    "delta",
    "gamma",
    "vega",
    "theta",
)

HARVEST_SCHEMA: dict[str, pl.DataType] = {
    "snapshot_ts": pl.Datetime("ms", "UTC"),
    "instrument_name": pl.String(),
    "expiry_ts": pl.Datetime("ms", "UTC"),
    "strike": pl.Float64(),
    "option_type": pl.String(),
    "mark_price": pl.Float64(),
    "mark_iv": pl.Float64(),
    "underlying_price": pl.Float64(),
    "index_price": pl.Float64(),
    "bid_price": pl.Float64(),
    "ask_price": pl.Float64(),
    "bid_iv": pl.Float64(),
    "ask_iv": pl.Float64(),
    "open_interest": pl.Float64(),
    "volume": pl.Float64(),
    "interest_rate": pl.Float64(),
    "delta": pl.Float64(),
    "gamma": pl.Float64(),
    "vega": pl.Float64(),
    "theta": pl.Float64(),
}

# BTC-27DEC24-100000-C ; strikes may carry a decimal mark, 'd' (ETH-1JAN25-2d5-C) or '.' (ETH-3JAN25-3250.5-P).
INSTRUMENT_PATTERN = r"^([A-Z]+)-(\d{1,2}[A-Z]{3}\d{2})-([0-9]+(?:[d.][0-9]+)?)-([CP])$"
EXPIRY_HOUR_UTC = 8  # Deribit options expire at 08:00 UTC


def parse_instrument_exprs(name: pl.Expr) -> dict[str, pl.Expr]:
    """Polars expressions parsing Deribit names into expiry_ts, strike, option_type.

    Unparsable names give nulls (counted by data quality), never an exception.
    """
    parts = name.str.extract_groups(INSTRUMENT_PATTERN)
    date = parts.struct.field("2").str.to_date("%d%b%y", strict=False)
    expiry = (
        date.cast(pl.Datetime("ms")) + pl.duration(hours=EXPIRY_HOUR_UTC)
    ).dt.replace_time_zone("UTC")
    strike = parts.struct.field("3").str.replace("d", ".", literal=True).cast(pl.Float64, strict=False)
    return {
        "currency": parts.struct.field("1"),
        "expiry_ts": expiry,
        "strike": strike,
        "option_type": parts.struct.field("4"),
    }


PARSED_COLUMNS: tuple[str, ...] = ("expiry_ts", "strike", "option_type")


def parse_instrument_names(names: pl.Series) -> pl.DataFrame:
    """`expiry_ts` (ms UTC), `strike`, `option_type` for every element of `names`, row for row.

    Each distinct name is parsed once (`parse_instrument_exprs`) and the rows
    take their values through an Enum of the distinct names: two hash passes
    over the rows instead of a regex per row (a harvest repeats ~1,500 names
    ~2,000 times a day). Null or unparsable names give nulls.
    """
    distinct = names.drop_nulls().unique()
    parsed = pl.DataFrame({"n": distinct}).select(
        **{c: e for c, e in parse_instrument_exprs(pl.col("n")).items() if c in PARSED_COLUMNS})
    codes = names.cast(pl.Enum(distinct)).to_physical()
    return parsed.select(pl.all().gather(codes))


def with_parsed_columns(frame: pl.DataFrame) -> pl.DataFrame:
    """`frame` with `expiry_ts`, `strike`, `option_type` parsed from `instrument_name` where those columns are absent.

    What calib's own writers store, so the files they write never need the
    reader's name parsing (SPEC section 2 lets other tools omit those columns).
    Columns already there are kept as written (the reader fills their nulls);
    frames without `instrument_name` come back unchanged.
    """
    absent = [c for c in PARSED_COLUMNS if c not in frame.columns]
    if not absent or "instrument_name" not in frame.columns:
        return frame
    parsed = parse_instrument_names(frame["instrument_name"].cast(pl.String, strict=False))
    return frame.with_columns(parsed[c].cast(HARVEST_SCHEMA[c]).alias(c) for c in absent)

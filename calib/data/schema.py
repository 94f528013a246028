"""The harvested-snapshot contract (SPEC section 2): columns, types, name parsing."""

from __future__ import annotations

import functools
from collections.abc import Sequence

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


def name_type() -> pl.Categorical:
    """A categorical for instrument names with categories of its own (freed with the data using them).

    A column cast into it hashes each row once and numbers its distinct names
    0..k-1: its categories are exactly the names it holds, and the casts of two
    scans running side by side share no lock.
    """
    return pl.Categorical(pl.Categories.random("calib"))


# The types of the parsed columns: the reader's (us timestamps), so the rows it fills take them without a cast.
PARSED_TYPES: dict[str, pl.DataType] = {"expiry_ts": pl.Datetime("us", "UTC"), "strike": pl.Float64(),
                                        "option_type": pl.String()}


def parse_name_codes(names: pl.Series) -> pl.DataFrame:
    """`expiry_ts` (us UTC), `strike`, `option_type` for every element of `names`, row for row.

    `names` is a categorical of `name_type`: each of its categories is parsed
    once (`parse_instrument_exprs`) and the rows take their values by code,
    one gather (from a single-chunk table: ~10x faster than from two chunks for
    the strings). Null or unparsable names give nulls.
    """
    categories = names.dtype.categories.to_series()  # type: ignore[attr-defined]
    parsed = pl.DataFrame({"n": categories}).select(
        **{c: e.cast(PARSED_TYPES[c]) for c, e in parse_instrument_exprs(pl.col("n")).items()
           if c in PARSED_COLUMNS}).rechunk()
    return parsed.gather(names.to_physical())


def parse_instrument_names(names: pl.Series) -> pl.DataFrame:
    """`expiry_ts` (ms UTC), `strike`, `option_type` of a String series, row for row (`parse_name_codes`
    after one hash per row into a `name_type`)."""
    parsed = parse_name_codes(names.cast(pl.String, strict=False).cast(name_type()))
    return parsed.with_columns(pl.col("expiry_ts").cast(HARVEST_SCHEMA["expiry_ts"]))


def fill_from_name(lf: pl.LazyFrame, absent: Sequence[str] = ()) -> pl.LazyFrame:
    """Expiry, strike and type come from the instrument name where the columns are null.

    The name is read into a `name_type` inside the scan (one hash per row, on
    polars' threads); `parse_name_codes` then fills the three columns by code,
    each distinct name parsed once per frame, in a `map_batches` node (the rows
    arrive filtered by time; no optimization moves through it). Columns in
    `absent` (not in the files: all null) take the parsed values as they are,
    the others keep their values where not null. The name comes out as String
    again: the categories are this scan's own, so two scans' categoricals
    could not be concatenated (the reader concats one scan per file schema).
    """
    schema = lf.collect_schema()
    targets = tuple(c for c in PARSED_COLUMNS if c in schema)
    if not targets:
        return lf
    lf = lf.with_columns(pl.col("instrument_name").cast(pl.String, strict=False).cast(name_type()))
    fill = functools.partial(_fill_parsed, targets=targets, absent=frozenset(absent))
    return lf.map_batches(fill, schema=dict(lf.collect_schema())).with_columns(
        pl.col("instrument_name").cast(pl.String))


def _fill_parsed(frame: pl.DataFrame, *, targets: tuple[str, ...], absent: frozenset[str]) -> pl.DataFrame:
    if frame.height == 0:
        return frame
    if not absent and not frame.select(pl.any_horizontal(pl.col(c).is_null() for c in targets).any()).item():
        return frame  # nothing to fill (present, non-null columns)
    parsed = parse_name_codes(frame["instrument_name"])

    def filled(c: str) -> pl.Series:
        p = parsed[c] if parsed[c].dtype == frame.schema[c] else parsed[c].cast(frame.schema[c])
        return p if c in absent else frame[c].fill_null(p)

    return frame.with_columns(filled(c).alias(c) for c in targets)


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
    parsed = parse_instrument_names(frame["instrument_name"])
    return frame.with_columns(parsed[c].cast(HARVEST_SCHEMA[c]).alias(c) for c in absent)

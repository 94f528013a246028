"""Row classification: raw CSV rows of one underlying -> typed option rows, the rest counted as skipped."""

from __future__ import annotations

import polars as pl

from calib.data.schema import INSTRUMENT_PATTERN
from calib.data.tardis.common import (
    EXCHANGE,
    OPTIONAL_FLOATS,
    REQUIRED_FLOATS,
    STATE_SCHEMA,
    add_count,
)


def _finite_or_null(expr: pl.Expr) -> pl.Expr:
    return pl.when(expr.is_finite()).then(expr)


class Classifier:
    """Types raw string blocks, counts bad rows by reason and keeps the usable ones.

    The expressions are built once per import; each block then runs as one
    polars query (`collect_all` shares the scan between the counts and the
    rows). Rows of other exchanges and currencies are dropped on two cheap
    string tests before anything is cast. Usable rows include `zero_mark`
    rows (still counted as skipped): they are the instrument's latest state,
    so an older non-zero mark must not linger in the snapshots.
    """

    def __init__(self, underlying: str, every_us: int) -> None:
        symbol = pl.col("symbol")
        self.scope = (
            pl.when(pl.col("exchange").is_null() | symbol.is_null())
            .then(pl.lit("unparsable"))
            .when(pl.col("exchange") != EXCHANGE)
            .then(pl.lit("other_exchange"))
            .when(symbol.str.starts_with(f"{underlying}-"))
            .then(pl.lit(None, pl.String))
            .when(symbol.str.starts_with(f"{underlying}_"))
            .then(pl.lit("linear_usdc"))
            .otherwise(pl.lit("other_underlying"))
            .alias("_reason")
        )

        def number(name: str) -> pl.Expr:
            return pl.col(name).cast(pl.Float64, strict=False)

        self.typed = [
            symbol.alias("instrument_name"),
            pl.col("type")
            .replace_strict({"call": "C", "put": "P"}, default=None, return_dtype=pl.String)
            .alias("option_type"),
            pl.col("timestamp").cast(pl.Int64, strict=False).alias("ts"),
            pl.col("expiration").cast(pl.Int64, strict=False).alias("expiry_us"),
            number("strike_price").alias("strike"),
            number("mark_price").alias("mark_price"),
            number("underlying_price").alias("underlying_price"),
            # text that is present but not a number (empty cells are plain nulls)
            pl.any_horizontal(
                pl.col(name).is_not_null() & number(name).is_null() for name in OPTIONAL_FLOATS
            ).alias("_garbage"),
            *(_finite_or_null(number(name)).alias(name) for name in OPTIONAL_FLOATS),
        ]
        unparsable = pl.any_horizontal(
            pl.col("ts").is_null(),
            pl.col("expiry_us").is_null(),
            pl.col("option_type").is_null(),
            pl.col("_garbage"),
            *(~pl.col(name).is_finite().fill_null(False) for name in REQUIRED_FLOATS),
        )
        invalid = (
            (pl.col("ts") <= 0)
            | (pl.col("expiry_us") <= 0)
            | (pl.col("strike") <= 0)
            | (pl.col("underlying_price") <= 0)
            | (pl.col("mark_price") < 0)
        )
        self.reason = (
            pl.when(unparsable)
            .then(pl.lit("unparsable"))
            .when(invalid)
            .then(pl.lit("invalid_value"))
            .otherwise(pl.lit(None, pl.String))
            .alias("_reason")
        )
        self.bnd = (((pl.col("ts") + (every_us - 1)) // every_us) * every_us).alias("bnd")
        self.columns = list(STATE_SCHEMA)

    def __call__(self, raw: pl.DataFrame, skipped: dict[str, int]) -> pl.DataFrame:
        """Typed rows of one raw block, before the name and zero-mark checks of `finish`."""
        scoped = raw.lazy().with_columns(self.scope)
        typed = (
            scoped.filter(pl.col("_reason").is_null()).select(self.typed).with_columns(self.reason)
        )
        out_of_scope, bad, usable = pl.collect_all(
            [
                scoped.group_by("_reason").len(),
                typed.group_by("_reason").len(),
                typed.filter(pl.col("_reason").is_null())
                .with_columns(self.bnd)
                .select(self.columns),
            ]
        )
        for counts in (out_of_scope, bad):
            for name, n in counts.iter_rows():
                if name is not None:
                    skipped[name] = skipped.get(name, 0) + int(n)
        return usable

    @staticmethod
    def finish(typed: list[pl.DataFrame], skipped: dict[str, int]) -> pl.DataFrame:
        """One batch of typed blocks: drop malformed names, count zero marks.

        Names are checked once per distinct symbol (a regex on every row would
        cost more than all the casts). Zero-mark rows stay in the batch.
        """
        batch = pl.concat(typed)
        names = batch.get_column("instrument_name").unique()
        bad_names = names.filter(~names.str.contains(INSTRUMENT_PATTERN))
        if bad_names.len():
            bad = batch.get_column("instrument_name").is_in(bad_names.implode())
            add_count(skipped, "unparsable", int(bad.sum()))
            batch = batch.filter(~bad)
        add_count(skipped, "zero_mark", int((batch.get_column("mark_price") == 0).sum()))
        return batch


# --------------------------------------------------------------------------- index

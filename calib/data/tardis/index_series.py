"""The index series a snapshot takes its `index_price` from (an index file, or the nearest forward)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from calib.data.tardis.common import add_count
from calib.data.tardis.csv_stream import iter_csv_blocks, read_header
from calib.errors import InvalidInputError


@dataclass(frozen=True, slots=True)
class IndexSeries:
    """Last index value per `every` window, for as-of look-ups at boundaries."""

    window_end_us: np.ndarray
    obs_ts_us: np.ndarray
    price_usd: np.ndarray
    tolerance_us: int

    @classmethod
    def from_file(
        cls,
        path: Path,
        *,
        underlying: str,
        every_us: int,
        tolerance_us: int,
        batch_rows: int,
        skipped: dict[str, int],
    ) -> IndexSeries:
        header = read_header(path)
        value = "index_price" if "index_price" in header else "price"
        if value not in header:
            raise InvalidInputError(
                f"index file {path} needs an `index_price` or `price` column; "
                f"header is {','.join(header) or '(empty)'}"
            )
        columns = ["timestamp", value, *(["symbol"] if "symbol" in header else [])]
        parts: list[pl.DataFrame] = []
        counter: dict[str, int] = {}
        for raw in iter_csv_blocks(path, columns, ["timestamp", value], batch_rows, counter):
            ts = pl.col("timestamp").cast(pl.Int64, strict=False)
            price = pl.col(value).cast(pl.Float64, strict=False)
            other = pl.col("symbol").is_not_null() & ~pl.col(
                "symbol"
            ).str.to_uppercase().str.starts_with(f"{underlying}-")
            bad_ts = ~(ts > 0).fill_null(False)
            bad_price = pl.col(value).is_not_null() & ~(price > 0).fill_null(False)
            if "symbol" not in raw.columns:
                raw = raw.with_columns(symbol=pl.lit(None, pl.String))
            df = raw.select(
                ts=ts,
                price=price,
                other=other,
                bad=~other & (bad_ts | bad_price),
            )
            add_count(skipped, "index_other_symbol", int(df.get_column("other").sum()))
            add_count(skipped, "index_unparsable", int(df.get_column("bad").sum()))
            # An empty index_price (derivative_ticker rows that only move funding) is no error.
            usable = df.filter(~pl.col("other") & ~pl.col("bad") & pl.col("price").is_not_null())
            parts.append(_last_per_window(usable.select("ts", "price"), every_us))
        add_count(skipped, "index_unparsable", counter.get("unparsable", 0))
        series = (
            _last_per_window(pl.concat(parts), every_us).sort("bnd")
            if parts
            else pl.DataFrame(schema={"bnd": pl.Int64, "ts": pl.Int64, "price": pl.Float64})
        )
        return cls(
            window_end_us=series.get_column("bnd").to_numpy(),
            obs_ts_us=series.get_column("ts").to_numpy(),
            price_usd=series.get_column("price").to_numpy(),
            tolerance_us=tolerance_us,
        )

    def at(self, boundary_us: int) -> float | None:
        """Last value observed at or before `boundary_us`, or None if none is recent enough."""
        i = int(np.searchsorted(self.window_end_us, boundary_us, side="right")) - 1
        if i < 0 or boundary_us - int(self.obs_ts_us[i]) > self.tolerance_us:
            return None
        return float(self.price_usd[i])


def _last_per_window(df: pl.DataFrame, every_us: int) -> pl.DataFrame:
    return (
        df.with_columns(bnd=((pl.col("ts") + (every_us - 1)) // every_us) * every_us)
        .sort("ts", maintain_order=True)
        .group_by("bnd")
        .agg(pl.col("ts").last(), pl.col("price").last())
    )

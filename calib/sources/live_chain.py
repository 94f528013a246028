"""One live chain from Deribit, shaped like a harvest read, for `calib calibrate-live`."""

from __future__ import annotations

from datetime import datetime, timedelta

import polars as pl

from calib.data.index_spot import index_spot_expr
from calib.data.reader import QUOTE_COLUMNS, TS_TYPE, HarvestRead
from calib.errors import SourceError
from calib.sources.deribit import DEFAULT_BASE_URL, DeribitClient

RV_HISTORY = timedelta(days=7, hours=1)
#: Total seconds `fetch_live_chain` may wait for Deribit (all calls, retries and back-off).
LIVE_SOURCE_BUDGET_S = 15.0  # the whole calibrate-live then ends within ~16 s of a dead exchange


def chain_to_read(chain: pl.DataFrame, index_history: pl.DataFrame) -> HarvestRead:
    """Turn a book-summary snapshot plus index history into the engine's input.

    `chain` is in the harvest schema (one snapshot); `index_history` has
    columns `ts` and `index_price` covering the 7 days before it.
    """
    quotes = chain.select(
        [
            (pl.col(c).cast(TS_TYPE) if c in ("snapshot_ts", "expiry_ts") else pl.col(c)).alias(c)
            if c in chain.columns
            else pl.lit(None).alias(c)
            for c in QUOTE_COLUMNS
        ]
    )
    snap = quotes["snapshot_ts"].max()
    now_index = quotes.select(index_spot_expr()).item()  # the harvest's definition of a snapshot's index
    hist = index_history.select(pl.col("ts").cast(TS_TYPE).alias("snapshot_ts"), pl.col("index_price").alias("index_usd"))
    if now_index is not None:
        hist = pl.concat([hist.filter(pl.col("snapshot_ts") < snap),
                          pl.DataFrame({"snapshot_ts": [snap], "index_usd": [now_index]},
                                       schema={"snapshot_ts": TS_TYPE, "index_usd": pl.Float64})])
    index = hist.with_columns(pl.lit("index_price").alias("index_source")).sort("snapshot_ts")
    return HarvestRead(
        quotes=quotes, index=index, columns_present=frozenset(c for c in chain.columns if c in QUOTE_COLUMNS),
        columns_missing_somewhere=frozenset(), files_total=0, files_read=0, skipped=(),
        window_start=snap, window_end=snap, newest_snapshot_ts=snap,  # type: ignore[arg-type]
    )


def fetch_live_chain(underlying: str, *, base_url: str = DEFAULT_BASE_URL,
                     budget_s: float | None = LIVE_SOURCE_BUDGET_S) -> HarvestRead:
    """Book summary + index now + 7 days of index history (Deribit public API).

    The three calls share one time budget of `budget_s` seconds (None: no bound),
    so a slow or failing exchange gives a `SourceError` within about that time.
    """
    with DeribitClient(base_url=base_url) as client, client.time_budget(budget_s):
        chain = client.option_chain(underlying)
        snap = chain["snapshot_ts"].max()
        if not isinstance(snap, datetime):
            raise SourceError(f"Deribit returned an empty option chain for {underlying}")
        history = client.index_history(underlying, snap - RV_HISTORY, snap, resolution="60")
    return chain_to_read(chain, history)

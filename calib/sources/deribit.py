"""A small, honest client for Deribit's public JSON-RPC-over-HTTP API (v2).

Only public market data is used, so no credentials are involved. Every call is
``GET <base_url>/public/<method>?<params>``; Deribit answers with a JSON-RPC
envelope ``{"jsonrpc": "2.0", "result": ...}`` or ``{"error": {"code", "message"}}``.

Endpoints and units
-------------------
``public/get_book_summary_by_currency`` (``currency=BTC|ETH``, ``kind=option``)
    One entry per option. Used fields: ``instrument_name``, ``mark_price`` (coin per
    option, kept as coin), ``mark_iv`` (percent, kept as percent), ``bid_iv`` /
    ``ask_iv`` (percent, when present), ``underlying_price`` (USD forward of the
    expiry, possibly a synthetic ``SYN.*`` forward), ``bid_price`` / ``ask_price``
    (coin), ``open_interest`` / ``volume`` (contracts), ``interest_rate``.
    ``creation_timestamp`` (ms since the epoch) is not stored: the snapshot time is
    the harvester's own UTC clock, taken just before the request.
``public/get_index_price`` (``index_name=btc_usd|eth_usd``)
    ``result.index_price``: the USD spot index.
``public/get_index_chart_data`` (``index_name``, ``range`` in 1h, 1d, 2d, 1m, 1y, all)
    ``result`` is a list of ``[ts_ms, index_price]`` pairs: the *index* itself, which
    is what the harvested ``index_price`` column (and so RV) is built from. It takes
    a range, not start/end, so the client asks for the smallest range covering
    ``start`` and cuts and resamples locally. This is the default history source.
``public/get_tradingview_chart_data`` (``instrument_name``, ``start_timestamp``,
``end_timestamp`` in ms, ``resolution`` in minutes or ``1D``)
    OHLC candles; used for ``index_history(..., source="perpetual")`` on
    ``<CUR>-PERPETUAL`` closes, a close proxy for the index with exact start/end
    control (the perpetual trades at a small funding-driven basis to the index).

Failure handling
----------------
Each request has a timeout. 429, 5xx, JSON-RPC ``too_many_requests`` (10028) and
transport errors (refused connection, reset, timeout) are retried at most
``max_retries`` times with exponential backoff and jitter (``Retry-After`` is
honoured on 429, capped). Other 4xx answers, JSON-RPC ``error`` objects and
malformed JSON are not retried. Everything ends in `calib.errors.SourceError` with
a message naming the URL and the cause. Each retry is reported as it happens to
an optional ``on_retry`` callback (`RetryEvent`: the cause, the wait, whether it
came from ``Retry-After``) and counted (``retries``, ``backoff_total_s``).
``DeribitClient.time_budget(seconds)`` bounds the *total* time of the calls made
inside it (requests, retries and back-off together): a slow exchange fails in
that time instead of ``(max_retries + 1) x timeout`` per call.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import polars as pl

from calib._typing import UNDERLYINGS
from calib.data.schema import HARVEST_SCHEMA, INSTRUMENT_PATTERN, parse_instrument_exprs
from calib.errors import InvalidInputError, SourceError
from calib.sources.deribit_rpc import DEFAULT_BASE_URL, DeribitRpc, RetryEvent, float_or_none

__all__ = ["DEFAULT_BASE_URL", "RESOLUTIONS", "DeribitClient", "HistorySource", "RetryEvent"]

#: Chart resolutions Deribit accepts, in minutes ("1D" = one day).
RESOLUTIONS: tuple[str, ...] = (
    "1", "3", "5", "10", "15", "30", "60", "120", "180", "360", "720", "1D",
)  # fmt: skip
HistorySource = Literal["index", "perpetual"]
# get_index_chart_data ranges, smallest first, with the span each one covers.
_INDEX_CHART_RANGES: tuple[tuple[str, timedelta], ...] = (
    ("1h", timedelta(hours=1)),
    ("1d", timedelta(days=1)),
    ("2d", timedelta(days=2)),
    ("1m", timedelta(days=30)),
    ("1y", timedelta(days=365)),
)
_FLOAT_FIELDS: tuple[str, ...] = (
    "mark_price",
    "mark_iv",
    "underlying_price",
    "bid_price",
    "ask_price",
    "bid_iv",
    "ask_iv",
    "open_interest",
    "volume",
    "interest_rate",
)


def _check_currency(currency: str) -> str:
    if currency not in UNDERLYINGS:
        raise InvalidInputError(
            f"`currency` must be one of {', '.join(UNDERLYINGS)}; got {currency!r}"
        )
    return currency


def _resolution_minutes(resolution: str) -> int:
    if resolution not in RESOLUTIONS:
        raise InvalidInputError(
            f"`resolution` must be one of {', '.join(RESOLUTIONS)}; got {resolution!r}"
        )
    return 1440 if resolution == "1D" else int(resolution)


def _as_utc(ts: datetime, name: str) -> datetime:
    if not isinstance(ts, datetime):
        raise InvalidInputError(f"`{name}` must be a datetime; got {type(ts).__name__}")
    return ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts.astimezone(UTC)


def _to_ms(ts: datetime) -> int:
    return int(ts.timestamp() * 1000)


class DeribitClient(DeribitRpc):
    """Public Deribit market data over HTTP, with timeouts and bounded retries.

    Parameters
    ----------
    base_url
        API root, default ``https://www.deribit.com/api/v2``; tests point it at a
        local server (``http://127.0.0.1:PORT/api/v2``).
    timeout_s
        Per-request timeout in seconds (connect, read, write and pool).
    max_retries
        Retries after the first attempt for retryable failures (so at most
        ``max_retries + 1`` requests per call).
    backoff_s
        Base delay: retry ``k`` (0-based) waits ``backoff_s * 2**k`` scaled by a
        random factor in [0.5, 1.5) (jitter), or the server's ``Retry-After``.
    transport
        Optional httpx transport (e.g. ``httpx.MockTransport``) for tests.
    sleep
        Function used to wait between retries (injectable for tests).
    on_retry
        Called with a `RetryEvent` before each retry's wait (e.g. to log it).

    Examples
    --------
    >>> with DeribitClient() as client:  # doctest: +SKIP
    ...     chain = client.book_summary("BTC")
    ...     spot_usd = client.index_price("BTC")
    """

    # -- market data ---------------------------------------------------------

    def index_price(self, currency: str) -> float:
        """Current Deribit USD spot index for ``currency`` (``btc_usd`` / ``eth_usd``).

        Returns
        -------
        float
            Index level in USD.
        """
        currency = _check_currency(currency)
        result = self.call("public/get_index_price", {"index_name": f"{currency.lower()}_usd"})
        price = float_or_none(result.get("index_price") if isinstance(result, dict) else None)
        if price is None or not price > 0:
            raise SourceError(
                f"Deribit get_index_price for {currency}: bad index_price in {result!r}"
            )
        return price

    def book_summary(self, currency: str, *, snapshot_ts: datetime | None = None) -> pl.DataFrame:
        """Every listed inverse option on ``currency`` as one harvested snapshot.

        Parameters
        ----------
        currency
            ``"BTC"`` or ``"ETH"``.
        snapshot_ts
            Harvest time to stamp on each row; default: UTC now, taken just before
            the request, truncated to milliseconds.

        Returns
        -------
        polars.DataFrame
            Columns and dtypes of `calib.data.schema.HARVEST_SCHEMA`: ``mark_price``,
            ``bid_price``, ``ask_price`` in coin; ``mark_iv``, ``bid_iv``,
            ``ask_iv`` in percent; ``underlying_price`` in USD; ``expiry_ts``
            (08:00 UTC), ``strike`` (USD) and ``option_type`` parsed from the name.
            ``index_price`` and the greeks are null (the book summary has none; the
            harvester fills ``index_price``). Linear USDC options
            (``BTC_USDC-...``) and unparsable names are skipped.
        """
        currency = _check_currency(currency)
        ts = _as_utc(snapshot_ts, "snapshot_ts") if snapshot_ts else datetime.now(UTC)
        ts = ts.replace(microsecond=ts.microsecond // 1000 * 1000)
        result = self.call(
            "public/get_book_summary_by_currency", {"currency": currency, "kind": "option"}
        )
        if not isinstance(result, list):
            raise SourceError(
                f"Deribit get_book_summary_by_currency for {currency}: expected a list, "
                f"got {type(result).__name__}"
            )
        rows: dict[str, list[Any]] = {"instrument_name": [], **{f: [] for f in _FLOAT_FIELDS}}
        for entry in result:
            name = entry.get("instrument_name") if isinstance(entry, dict) else None
            # Inverse options only: "BTC-27DEC24-100000-C"; linear ones are "BTC_USDC-...".
            if not isinstance(name, str) or not name.startswith(f"{currency}-"):
                continue
            rows["instrument_name"].append(name)
            for field in _FLOAT_FIELDS:
                rows[field].append(float_or_none(entry.get(field)))
        frame = pl.DataFrame(
            rows, schema={"instrument_name": pl.String, **dict.fromkeys(_FLOAT_FIELDS, pl.Float64)}
        )
        frame = frame.filter(pl.col("instrument_name").str.contains(INSTRUMENT_PATTERN))
        parsed = parse_instrument_exprs(pl.col("instrument_name"))
        frame = frame.with_columns(
            pl.lit(ts).cast(HARVEST_SCHEMA["snapshot_ts"]).alias("snapshot_ts"),
            parsed["expiry_ts"].alias("expiry_ts"),
            parsed["strike"].alias("strike"),
            parsed["option_type"].alias("option_type"),
        )
        return frame.select(
            (pl.col(c) if c in frame.columns else pl.lit(None)).cast(dtype).alias(c)
            for c, dtype in HARVEST_SCHEMA.items()
        ).sort("expiry_ts", "strike", "option_type")

    def option_chain(self, currency: str) -> pl.DataFrame:
        """`book_summary` with ``index_price`` filled from `index_price` (one live snapshot).

        The index is fetched right after the book summary, as the harvester does.
        """
        chain = self.book_summary(currency)
        index_usd = self.index_price(currency)
        return chain.with_columns(pl.lit(index_usd, dtype=pl.Float64).alias("index_price"))

    def index_history(
        self,
        currency: str,
        start: datetime,
        end: datetime,
        resolution: str = "60",
        *,
        source: HistorySource = "index",
    ) -> pl.DataFrame:
        """USD index history in ``[start, end]`` on a regular grid, for realized vol.

        Parameters
        ----------
        currency
            ``"BTC"`` or ``"ETH"``.
        start, end
            Window bounds (naive = UTC).
        resolution
            Bar length in minutes as Deribit spells it (``"1"`` ... ``"720"``) or
            ``"1D"``.
        source
            ``"index"`` (default): ``public/get_index_chart_data`` on ``<cur>_usd``,
            fetched with the smallest range covering ``start`` (ranges are
            anchored at *now*), then cut to the window and resampled to the last
            value in each bar; the endpoint's own spacing depends on the range
            (hourly points for ``1m`` in Deribit's example), so bars finer than
            that come back sparser, never interpolated. ``"perpetual"``: closes of
            ``public/get_tradingview_chart_data`` on ``<CUR>-PERPETUAL``.

        Returns
        -------
        polars.DataFrame
            ``ts`` (Datetime ms UTC, bar start) and ``index_price`` (USD), sorted
            by ``ts``, one row per bar that has data.
        """
        currency = _check_currency(currency)
        start_utc, end_utc = _as_utc(start, "start"), _as_utc(end, "end")
        if start_utc >= end_utc:
            raise InvalidInputError(f"`start` ({start_utc}) must be before `end` ({end_utc})")
        minutes = _resolution_minutes(resolution)
        if source == "index":
            points = self._index_chart_points(currency, start_utc)
        elif source == "perpetual":
            points = self._perpetual_closes(currency, start_utc, end_utc, resolution)
        else:
            raise InvalidInputError(f"`source` must be 'index' or 'perpetual'; got {source!r}")
        frame = pl.DataFrame(
            {"ts_ms": [p[0] for p in points], "index_price": [p[1] for p in points]},
            schema={"ts_ms": pl.Int64, "index_price": pl.Float64},
        )
        frame = (
            frame.drop_nulls()
            .filter(pl.col("index_price") > 0)
            .with_columns(
                pl.from_epoch("ts_ms", time_unit="ms").dt.replace_time_zone("UTC").alias("ts")
            )
            .filter(pl.col("ts").is_between(start_utc, end_utc))
            .sort("ts")
        )
        # Last observation in each bar, labelled by the bar start.
        return (
            frame.group_by(pl.col("ts").dt.truncate(f"{minutes}m"), maintain_order=True)
            .agg(pl.col("index_price").last())
            .sort("ts")
            .select(pl.col("ts").cast(pl.Datetime("ms", "UTC")), "index_price")
        )

    def _index_chart_points(self, currency: str, start_utc: datetime) -> list[tuple[int, float]]:
        span = datetime.now(UTC) - start_utc
        chart_range = next((r for r, d in _INDEX_CHART_RANGES if d >= span), "all")
        result = self.call(
            "public/get_index_chart_data",
            {"index_name": f"{currency.lower()}_usd", "range": chart_range},
        )
        if not isinstance(result, list):
            raise SourceError(
                f"Deribit get_index_chart_data for {currency}: expected a list of "
                f"[ts_ms, price] pairs, got {type(result).__name__}"
            )
        points: list[tuple[int, float]] = []
        for item in result:
            if isinstance(item, list | tuple) and len(item) >= 2:
                ts_ms, price = float_or_none(item[0]), float_or_none(item[1])
                if ts_ms is not None and price is not None:
                    points.append((int(ts_ms), price))
        return points

    def _perpetual_closes(
        self, currency: str, start_utc: datetime, end_utc: datetime, resolution: str
    ) -> list[tuple[int, float]]:
        result = self.call(
            "public/get_tradingview_chart_data",
            {
                "instrument_name": f"{currency}-PERPETUAL",
                "start_timestamp": _to_ms(start_utc),
                "end_timestamp": _to_ms(end_utc),
                "resolution": resolution,
            },
        )
        if not isinstance(result, dict):
            raise SourceError(
                f"Deribit get_tradingview_chart_data for {currency}: expected an object, "
                f"got {type(result).__name__}"
            )
        if result.get("status") == "no_data":
            return []
        ticks, closes = result.get("ticks"), result.get("close")
        if not isinstance(ticks, list) or not isinstance(closes, list) or len(ticks) != len(closes):
            raise SourceError(
                f"Deribit get_tradingview_chart_data for {currency}: `ticks` and `close` "
                "must be lists of equal length"
            )
        points: list[tuple[int, float]] = []
        for t, c in zip(ticks, closes, strict=True):
            ts_ms, price = float_or_none(t), float_or_none(c)
            if ts_ms is not None and price is not None:
                points.append((int(ts_ms), price))
        return points

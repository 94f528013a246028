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

import json
import random
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import Any, Literal, Self

import httpx
import polars as pl

from calib._typing import UNDERLYINGS
from calib.data.schema import HARVEST_SCHEMA, INSTRUMENT_PATTERN, parse_instrument_exprs
from calib.errors import InvalidInputError, SourceError

DEFAULT_BASE_URL = "https://www.deribit.com/api/v2"

#: Chart resolutions Deribit accepts, in minutes ("1D" = one day).
RESOLUTIONS: tuple[str, ...] = (
    "1", "3", "5", "10", "15", "30", "60", "120", "180", "360", "720", "1D",
)  # fmt: skip
HistorySource = Literal["index", "perpetual"]

_RETRY_STATUS = frozenset({429, 500, 502, 503, 504})
_RPC_TOO_MANY_REQUESTS = 10028
_MAX_RETRY_AFTER_S = 30.0
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


def _float_or_none(value: Any) -> float | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _attempts(n: int) -> str:
    return f"{n} attempt" if n == 1 else f"{n} attempts"


@dataclass(frozen=True, slots=True, kw_only=True)
class RetryEvent:
    """One retry the client is about to make, reported before it waits.

    Attributes
    ----------
    method
        JSON-RPC method, e.g. ``"public/get_index_price"``.
    retry
        1 for the first retry.
    max_retries
        Retries allowed for this call.
    cause
        Why the last attempt failed: ``"HTTP 429"``, ``"ReadTimeout"``, ...
    delay_s
        Seconds the client waits before the retry.
    retry_after_s
        The server's ``Retry-After`` in seconds when it sent one (429), else None.
    """

    method: str
    retry: int
    max_retries: int
    cause: str
    delay_s: float
    retry_after_s: float | None = None

    def describe(self) -> str:
        """One log line."""
        wait = f"waiting {self.delay_s:.1f} s"
        if self.retry_after_s is not None:
            wait += f" (Retry-After {self.retry_after_s:g} s)"
        return f"{self.method}: {self.cause}; retry {self.retry}/{self.max_retries}, {wait}"


def _snippet(text: str, limit: int = 200) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit] + "..."


class DeribitClient:
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

    def __init__(
        self,
        base_url: str = DEFAULT_BASE_URL,
        timeout_s: float = 10.0,
        max_retries: int = 4,
        backoff_s: float = 0.5,
        transport: httpx.BaseTransport | None = None,
        *,
        sleep: Callable[[float], None] = time.sleep,
        on_retry: Callable[[RetryEvent], None] | None = None,
    ) -> None:
        if timeout_s <= 0:
            raise InvalidInputError(f"`timeout_s` must be positive; got {timeout_s}")
        if max_retries < 0:
            raise InvalidInputError(f"`max_retries` must be >= 0; got {max_retries}")
        if backoff_s < 0:
            raise InvalidInputError(f"`backoff_s` must be >= 0; got {backoff_s}")
        self.base_url = base_url.rstrip("/")
        self.timeout_s = float(timeout_s)
        self.max_retries = int(max_retries)
        self.backoff_s = float(backoff_s)
        self._sleep = sleep
        self._on_retry = on_retry
        self._deadline: float | None = None  # monotonic; set by `time_budget`
        self._budget_s: float | None = None
        self.retries = 0
        self.backoff_total_s = 0.0
        self._http = httpx.Client(
            timeout=httpx.Timeout(self.timeout_s),
            transport=transport,
            headers={"Accept": "application/json", "User-Agent": "calib-harvester/0.1"},
        )

    # -- lifecycle -----------------------------------------------------------

    def close(self) -> None:
        """Close the underlying HTTP connection pool."""
        self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"DeribitClient(base_url={self.base_url!r}, timeout_s={self.timeout_s})"

    @contextmanager
    def time_budget(self, seconds: float | None) -> Iterator[None]:
        """Bound the total time of every call made inside (requests, retries, back-off).

        A request gets at most the time left; a retry whose wait would pass the
        deadline is not made. Either way the call fails with a `SourceError`
        naming the budget and the last cause. None means no bound.
        """
        if seconds is not None and not seconds > 0:
            raise InvalidInputError(f"`seconds` must be positive or None; got {seconds}")
        outer = self._deadline, self._budget_s
        if seconds is not None:
            self._deadline, self._budget_s = time.monotonic() + float(seconds), float(seconds)
        try:
            yield
        finally:
            self._deadline, self._budget_s = outer

    # -- transport -----------------------------------------------------------

    def _backoff_delay_s(self, retry_index: int, response: httpx.Response | None) -> float:
        retry_after = self._retry_after_s(response)
        if retry_after is not None:
            return min(retry_after, _MAX_RETRY_AFTER_S)
        return self.backoff_s * float(2**retry_index) * random.uniform(0.5, 1.5)

    @staticmethod
    def _retry_after_s(response: httpx.Response | None) -> float | None:
        if response is None or response.status_code != 429:
            return None
        value = _float_or_none(response.headers.get("Retry-After"))
        return value if value is not None and value >= 0 else None

    def _left_s(self) -> float | None:
        return None if self._deadline is None else self._deadline - time.monotonic()

    def _out_of_time(self, method: str, cause: str) -> SourceError:
        return SourceError(
            f"Deribit gave no usable answer for {method} within the {self._budget_s:g} s time budget "
            f"(last: {cause})"
        )

    def _retry(self, method: str, attempt: int, cause: str, response: httpx.Response | None) -> None:
        """Report and wait before retry `attempt + 1`, or raise when the budget cannot cover it."""
        delay = self._backoff_delay_s(attempt, response)
        left = self._left_s()
        if left is not None and delay >= left:
            raise self._out_of_time(method, cause)
        if self._on_retry is not None:
            self._on_retry(RetryEvent(method=method, retry=attempt + 1, max_retries=self.max_retries,
                                      cause=cause, delay_s=delay,
                                      retry_after_s=self._retry_after_s(response)))
        self.retries += 1
        self.backoff_total_s += delay
        self._sleep(delay)

    def call(self, method: str, params: Mapping[str, Any] | None = None) -> Any:
        """Call one public JSON-RPC method and return its ``result``.

        Parameters
        ----------
        method
            Method name, e.g. ``"public/get_index_price"``.
        params
            Query parameters; booleans are sent as ``true``/``false``.

        Returns
        -------
        Any
            The decoded ``result`` member of the answer.

        Raises
        ------
        SourceError
            Unreachable host or timeout after all retries, retryable HTTP status
            still failing after all retries, non-retryable HTTP status, a
            JSON-RPC ``error`` object, or a body that is not a JSON-RPC answer.
        """
        url = f"{self.base_url}/{method.lstrip('/')}"
        query = {
            k: (str(v).lower() if isinstance(v, bool) else v)
            for k, v in (params or {}).items()
            if v is not None
        }
        attempts = self.max_retries + 1
        for attempt in range(attempts):
            last_try = attempt == attempts - 1
            left = self._left_s()
            if left is not None and left <= 0:
                raise self._out_of_time(method, "no time left for another request")
            timeout_s = self.timeout_s if left is None else min(self.timeout_s, left)
            try:
                response = self._http.get(url, params=query, timeout=httpx.Timeout(timeout_s))
            except httpx.TimeoutException as e:
                if last_try or (left is not None and timeout_s < self.timeout_s):
                    raise SourceError(
                        f"Deribit did not answer within {timeout_s:.3g} s at {url} "
                        f"({_attempts(attempt + 1)}"
                        + (f", {self._budget_s:g} s time budget" if self._budget_s is not None else "")
                        + f"): {type(e).__name__}"
                    ) from e
                self._retry(method, attempt, type(e).__name__, None)
                continue
            except httpx.TransportError as e:
                if last_try:
                    raise SourceError(
                        f"Deribit unreachable at {url} after {_attempts(attempts)}: "
                        f"{type(e).__name__}: {e}"
                    ) from e
                self._retry(method, attempt, type(e).__name__, None)
                continue

            payload = self._decode(response, url)
            error = payload.get("error") if isinstance(payload, dict) else None
            rate_limited = isinstance(error, dict) and error.get("code") == _RPC_TOO_MANY_REQUESTS
            if response.status_code in _RETRY_STATUS or rate_limited:
                if last_try:
                    raise SourceError(
                        f"Deribit answered HTTP {response.status_code} at {url} after "
                        f"{_attempts(attempts)}: {self._describe(payload, response)}"
                    )
                cause = f"HTTP {response.status_code}" + (" too_many_requests" if rate_limited else "")
                self._retry(method, attempt, cause, response)
                continue
            if error is not None:
                raise SourceError(
                    f"Deribit error for {method} (HTTP {response.status_code}): "
                    f"{self._describe(payload, response)}"
                )
            if response.status_code >= 400:
                raise SourceError(
                    f"Deribit answered HTTP {response.status_code} at {url}: "
                    f"{self._describe(payload, response)}"
                )
            if not isinstance(payload, dict) or "result" not in payload:
                raise SourceError(
                    f"Deribit answer from {url} has no JSON-RPC `result`: "
                    f"{_snippet(response.text)!r}"
                )
            return payload["result"]
        raise AssertionError("unreachable")  # pragma: no cover

    @staticmethod
    def _decode(response: httpx.Response, url: str) -> Any:
        try:
            return response.json()
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            if response.status_code >= 400:
                return None  # e.g. an HTML 502 page: the status decides
            raise SourceError(
                f"Deribit sent malformed JSON from {url} (HTTP {response.status_code}): "
                f"{_snippet(response.text)!r}"
            ) from e

    @staticmethod
    def _describe(payload: Any, response: httpx.Response) -> str:
        error = payload.get("error") if isinstance(payload, dict) else None
        if isinstance(error, dict):
            text = f"code {error.get('code')}: {error.get('message')}"
            if error.get("data") is not None:
                text += f" ({_snippet(json.dumps(error['data']))})"
            return text
        return _snippet(response.text) or "<empty body>"

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
        price = _float_or_none(result.get("index_price") if isinstance(result, dict) else None)
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
                rows[field].append(_float_or_none(entry.get(field)))
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
                ts_ms, price = _float_or_none(item[0]), _float_or_none(item[1])
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
            ts_ms, price = _float_or_none(t), _float_or_none(c)
            if ts_ms is not None and price is not None:
                points.append((int(ts_ms), price))
        return points

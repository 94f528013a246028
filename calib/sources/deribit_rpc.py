"""Deribit's JSON-RPC over HTTP: one `call` with timeouts, a time budget and bounded, jittered retries.

The transport half of `calib.sources.deribit.DeribitClient` (which adds the market-data
endpoints): retries on 429/5xx and Deribit's rate-limit error, `Retry-After` honoured,
every failure one `SourceError` naming the method and the attempts made.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self

import httpx

from calib.errors import InvalidInputError, SourceError

DEFAULT_BASE_URL = "https://www.deribit.com/api/v2"
_RETRY_STATUS = frozenset({429, 500, 502, 503, 504})
_RPC_TOO_MANY_REQUESTS = 10028
_MAX_RETRY_AFTER_S = 30.0


def float_or_none(value: Any) -> float | None:
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


class DeribitRpc:
    """The HTTP session, retry policy and time budget behind `DeribitClient` (see its parameters)."""

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
        value = float_or_none(response.headers.get("Retry-After"))
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

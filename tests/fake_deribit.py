"""A real local HTTP server that speaks Deribit's public JSON-RPC-over-HTTP shape.

`FakeDeribit` listens on ``127.0.0.1`` on a free port, in a background thread,
and answers ``GET /api/v2/public/<method>?...`` like Deribit does. Each method
has a script of failures to play before it answers normally::

    with FakeDeribit() as fake:
        fake.script("public/get_index_price", [Fail.status_code(429), Fail.status_code(500)])
        client = DeribitClient(base_url=fake.base_url, backoff_s=0.001)

Scripted actions: ``Fail.status_code(code)`` (JSON-RPC error body, that HTTP status),
``Fail.malformed()`` (200 with a broken body), ``Fail.slow(seconds)`` (sleep,
then answer normally: trips a client timeout), ``Fail.rpc_error(code, message)``
(HTTP 400 with a JSON-RPC ``error`` object, as Deribit does), ``Fail.too_many(seconds)``
(HTTP 429 with a ``Retry-After`` header), ``Fail.ok()``.
"""

from __future__ import annotations

import json
import threading
from collections import defaultdict, deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self
from urllib.parse import parse_qs, urlsplit

INDEX_USD = {"BTC": 100_000.0, "ETH": 3_500.0}


@dataclass(frozen=True, slots=True)
class Fail:
    """One scripted answer."""

    kind: str
    status: int = 200
    seconds: float = 0.0
    code: int = 0
    message: str = ""

    @classmethod
    def ok(cls) -> Fail:
        return cls("ok")

    @classmethod
    def status_code(cls, status: int) -> Fail:
        return cls("status", status=status)

    @classmethod
    def too_many(cls, retry_after_s: float) -> Fail:
        return cls("status", status=429, seconds=retry_after_s)

    @classmethod
    def malformed(cls) -> Fail:
        return cls("malformed")

    @classmethod
    def slow(cls, seconds: float) -> Fail:
        return cls("slow", seconds=seconds)

    @classmethod
    def rpc_error(cls, code: int, message: str) -> Fail:
        return cls("rpc_error", status=400, code=code, message=message)


def _expiry_code(day: datetime) -> str:
    return f"{day.day}{day:%b%y}".upper()


def book_entries(currency: str, now: datetime | None = None) -> list[dict[str, Any]]:
    """Deribit-shaped ``get_book_summary_by_currency(kind=option)`` entries.

    Two expiries x three strikes x C/P of inverse options, plus one linear USDC
    option that a client must skip. Prices are coin, IVs percent.
    """
    now = now or datetime.now(UTC)
    spot = INDEX_USD[currency]
    entries: list[dict[str, Any]] = []
    for days in (7, 30):
        expiry = (now + timedelta(days=days)).replace(hour=8, minute=0, second=0, microsecond=0)
        code = _expiry_code(expiry)
        forward = spot * (1.0 + 0.0005 * days)
        for k_ratio in (0.9, 1.0, 1.1):
            strike = round(spot * k_ratio / 50) * 50
            strike_txt = f"{strike:g}".replace(".", "d")
            for opt in ("C", "P"):
                mark = max(0.0001, 0.02 + (0.1 if (opt == "C") == (k_ratio < 1) else 0.0))
                entries.append(
                    {
                        "volume_usd": 1200.5,
                        "volume": 12.0,
                        "underlying_price": forward,
                        "underlying_index": f"{currency}-{code}"
                        if days == 30
                        else f"SYN.{currency}-{code}",
                        "quote_currency": currency,
                        "price_change": None,
                        "open_interest": 150.5,
                        "mid_price": mark,
                        "mark_price": mark,
                        "mark_iv": 52.3 + 10 * abs(k_ratio - 1.0),
                        "bid_iv": 50.0,
                        "ask_iv": 55.0,
                        "low": None,
                        "last": None,
                        "interest_rate": 0.0,
                        "instrument_name": f"{currency}-{code}-{strike_txt}-{opt}",
                        "high": None,
                        "estimated_delivery_price": spot,
                        "creation_timestamp": int(now.timestamp() * 1000),
                        "bid_price": round(mark * 0.95, 4),
                        "ask_price": round(mark * 1.05, 4) if k_ratio != 1.1 else None,
                        "base_currency": currency,
                    }
                )
    entries.append(
        {
            "instrument_name": f"{currency}_USDC-{_expiry_code(now + timedelta(days=7))}-{spot:g}-C",
            "mark_price": 1234.5,
            "mark_iv": 50.0,
            "underlying_price": spot,
            "creation_timestamp": int(now.timestamp() * 1000),
        }
    )
    return entries


@dataclass
class FakeDeribit:
    """A threaded HTTP server on 127.0.0.1 answering Deribit public methods."""

    book: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    requests: list[tuple[str, dict[str, str]]] = field(default_factory=list)
    _scripts: dict[str, deque[Fail]] = field(default_factory=lambda: defaultdict(deque))
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _stop: threading.Event = field(default_factory=threading.Event)
    _server: ThreadingHTTPServer | None = None
    _thread: threading.Thread | None = None

    # -- lifecycle -------------------------------------------------------------

    def start(self) -> Self:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                fake._handle(self)

            def log_message(self, format: str, *args: Any) -> None:
                pass  # keep test output clean

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        server.block_on_close = True
        server.handle_error = lambda request, client_address: None  # type: ignore[method-assign]
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
        self._thread.daemon = True
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()  # wakes any slow handler
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        assert self._server is not None, "server not started"
        return int(self._server.server_address[1])

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api/v2"

    # -- scripting -------------------------------------------------------------

    def script(self, method: str, actions: Iterable[Fail]) -> None:
        """Queue answers for ``method`` (e.g. ``"public/get_index_price"``)."""
        with self._lock:
            self._scripts[method].extend(actions)

    def calls(self, method: str) -> int:
        """How many requests reached ``method``."""
        with self._lock:
            return sum(1 for m, _ in self.requests if m == method)

    # -- answering -------------------------------------------------------------

    def _handle(self, h: BaseHTTPRequestHandler) -> None:
        parts = urlsplit(h.path)
        method = parts.path.removeprefix("/api/v2/")
        params = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        with self._lock:
            self.requests.append((method, params))
            queue = self._scripts.get(method)
            action = queue.popleft() if queue else Fail.ok()
        if action.kind == "slow":
            self._stop.wait(action.seconds)
        if action.kind == "malformed":
            self._send(h, 200, b'{"jsonrpc": "2.0", "result": [{"instrument_name": ')
            return
        if action.kind == "status":
            body = {"jsonrpc": "2.0", "error": {"code": action.status, "message": "scripted"}}
            retry_after = {"Retry-After": f"{action.seconds:g}"} if action.status == 429 and action.seconds else {}
            self._send(h, action.status, json.dumps(body).encode(), retry_after)
            return
        if action.kind == "rpc_error":
            body = {
                "jsonrpc": "2.0",
                "error": {"code": action.code, "message": action.message},
                "testnet": False,
            }
            self._send(h, action.status, json.dumps(body).encode())
            return
        try:
            result = self._result(method, params)
        except KeyError as e:
            body = {"jsonrpc": "2.0", "error": {"code": -32602, "message": f"Invalid params: {e}"}}
            self._send(h, 400, json.dumps(body).encode())
            return
        body = {
            "jsonrpc": "2.0",
            "result": result,
            "usIn": 1,
            "usOut": 2,
            "usDiff": 1,
            "testnet": False,
        }
        self._send(h, 200, json.dumps(body).encode())

    def _result(self, method: str, params: dict[str, str]) -> Any:
        if method == "public/get_book_summary_by_currency":
            currency = params["currency"]
            if params.get("kind") != "option":
                raise KeyError("kind")
            return self.book.get(currency) or book_entries(currency)
        if method == "public/get_index_price":
            currency = params["index_name"].split("_")[0].upper()
            return {
                "index_price": INDEX_USD[currency],
                "estimated_delivery_price": INDEX_USD[currency],
            }
        if method == "public/get_index_chart_data":
            currency = params["index_name"].split("_")[0].upper()
            hours = {"1h": 1, "1d": 24, "2d": 48, "1m": 720, "1y": 8760, "all": 8760}[
                params["range"]
            ]
            now_ms = int(datetime.now(UTC).timestamp() * 1000) // 3_600_000 * 3_600_000
            return [[now_ms - i * 3_600_000, INDEX_USD[currency] + i] for i in range(hours, -1, -1)]
        if method == "public/get_tradingview_chart_data":
            start, end = int(params["start_timestamp"]), int(params["end_timestamp"])
            step = 60_000 * (1440 if params["resolution"] == "1D" else int(params["resolution"]))
            ticks = list(range(start // step * step, end + 1, step))
            closes = [100.0 + i for i in range(len(ticks))]
            return {"status": "ok", "ticks": ticks, "close": closes, "open": closes}
        raise KeyError(method)

    @staticmethod
    def _send(h: BaseHTTPRequestHandler, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        try:
            h.send_response(status)
            for name, value in (headers or {}).items():
                h.send_header(name, value)
            h.send_header("Content-Type", "application/json")
            h.send_header("Content-Length", str(len(body)))
            h.end_headers()
            h.wfile.write(body)
        except OSError:
            pass  # the client gave up (timeout): nothing to do

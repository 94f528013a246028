"""`calib serve`: a read-only HTTP JSON API over the history file (Starlette on uvicorn).

Endpoints (GET only; any other method is 405):

- `/api/calibration/state?underlying=BTC`: exactly the object `calib state --json` prints;
- `/api/calibration/history?underlying=BTC&source=live&limit=20`: the records of `calib history --json`;
- `/api/calibration/runs/{run_id}`: `{"run": ..., "result": ...}` (404 when unknown);
- `/healthz`: the server is up, and whether the history file exists.

Every answer comes from `calib.client`, which reads through the same query
functions as the CLI with a bounded retry on lock conflicts. Errors are JSON
`{"error": ...}`: 400 bad parameters, 401 missing or wrong bearer token, 404
unknown run or path, 503 history file missing or locked beyond the retry.
"""

from __future__ import annotations

import hmac
import ipaddress
import socket
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from calib import client
from calib.errors import CalibError, InvalidInputError, StoreError

TOKEN_ENV = "CALIB_API_TOKEN"


@dataclass(frozen=True, slots=True, kw_only=True)
class ServeConfig:
    """Where `calib serve` listens and what it reads."""

    db: Path
    host: str = "127.0.0.1"
    port: int = 8765
    token: str | None = None  # required on every data request when set
    retry_s: float = client.DEFAULT_RETRY_S

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise InvalidInputError(f"`--port` must be 0-65535; got {self.port}")
        if not is_loopback(self.host) and not self.token:
            raise InvalidInputError(
                f"binding to {self.host} (not loopback) needs a bearer token: set {TOKEN_ENV} "
                "(clients send 'Authorization: Bearer <token>'), or bind to 127.0.0.1")


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and 'localhost'; a name or 0.0.0.0 reaches other machines."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def create_app(config: ServeConfig) -> Starlette:
    """The ASGI app; `config.db` is read on every request (nothing is cached)."""
    db = config.db

    def authorized(request: Request) -> bool:
        if not config.token:
            return True
        got = request.headers.get("authorization", "")
        scheme, _, value = got.partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(value.strip().encode(), config.token.encode())

    async def respond(request: Request, read: Callable[[], Any], *, needs_file: bool = True) -> Response:
        if not authorized(request):
            return JSONResponse({"error": "missing or wrong bearer token"}, status_code=401,
                                headers={"WWW-Authenticate": "Bearer"})
        if needs_file and not db.exists():
            return _error(503, f"history file {db} does not exist yet: run `calib auto-calibrate` or "
                               "`calib calibrate-live` first")
        try:
            body = await run_in_threadpool(read)
        except InvalidInputError as e:
            return _error(400, str(e))
        except StoreError as e:  # locked beyond the retry, or unreadable
            return _error(503, str(e))
        if body is None:
            return _error(404, "not found")
        return JSONResponse(body)

    def _param(request: Request, name: str) -> str | None:
        values = request.query_params.getlist(name)
        if len(values) > 1:
            raise InvalidInputError(f"`{name}` given {len(values)} times")
        return values[0] if values else None

    def _limit(request: Request) -> int:
        text = _param(request, "limit")
        if text is None:
            return 20
        try:
            return int(text)
        except ValueError:
            raise InvalidInputError(f"`limit` must be an integer from 1 to {client.MAX_LIMIT}; got {text!r}") from None

    async def state(request: Request) -> Response:
        try:
            und = client.check_underlying(_param(request, "underlying"))
        except InvalidInputError as e:
            return _error(400, str(e))
        return await respond(request, lambda: client.applied_multipliers(
            und, db=db, retry_s=config.retry_s).to_dict())

    async def history(request: Request) -> Response:
        try:
            und = _param(request, "underlying")
            und = client.check_underlying(und) if und is not None else None
            src = client.check_source(_param(request, "source"))
            limit = client.check_limit(_limit(request))
        except InvalidInputError as e:
            return _error(400, str(e))
        return await respond(request, lambda: client.latest_runs(
            und, source=src, limit=limit, db=db, retry_s=config.retry_s))

    async def run(request: Request) -> Response:
        run_id = str(request.path_params["run_id"])
        return await respond(request, lambda: client.get_run(run_id, db=db, retry_s=config.retry_s))

    async def healthz(request: Request) -> Response:
        # Open for liveness probes; behind a token it names no path to whoever can reach it.
        body: dict[str, Any] = {"status": "ok"} if config.token else {"status": "ok", "db": str(db)}
        return JSONResponse({**body, "db_exists": db.exists(), "auth": bool(config.token)})

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        messages = {404: "not found", 405: "method not allowed: this API is read-only (GET)"}
        return JSONResponse({"error": messages.get(exc.status_code, exc.detail)}, status_code=exc.status_code,
                            headers=exc.headers)

    routes = [
        Route("/api/calibration/state", state, methods=["GET"]),
        Route("/api/calibration/history", history, methods=["GET"]),
        Route("/api/calibration/runs/{run_id}", run, methods=["GET"]),
        Route("/healthz", healthz, methods=["GET"]),
    ]
    return Starlette(routes=routes, exception_handlers={HTTPException: http_error})


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on `host:port` (port 0: any free one), or CalibError saying why not."""
    try:
        family, kind, proto, _, addr = socket.getaddrinfo(host.strip("[]"), port, type=socket.SOCK_STREAM,
                                                          flags=socket.AI_PASSIVE)[0]
        sock = socket.socket(family, kind, proto)
    except OSError as e:
        raise CalibError(f"cannot listen on {host}:{port}: {e}") from e
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(addr)
        sock.listen(128)
    except OSError as e:
        sock.close()
        raise CalibError(f"cannot listen on {host}:{port}: {e.strerror or e}") from e
    return sock


def serve(config: ServeConfig, *, on_ready: Callable[[str], None] | None = None) -> None:
    """Bind first (a taken port is one clear error, not uvicorn's exit 3), then run until Ctrl-C / SIGTERM."""
    import uvicorn

    sock = bind(config.host, config.port)
    host, port = sock.getsockname()[:2]
    if on_ready is not None:
        shown = f"[{host}]" if ":" in host else host
        on_ready(f"http://{shown}:{port}")
    server = uvicorn.Server(uvicorn.Config(create_app(config), log_level="info", access_log=True,
                                           server_header=False))
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()

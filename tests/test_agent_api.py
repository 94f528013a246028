"""The agent's end: calib.client, `calib serve` over real HTTP on 127.0.0.1, and webhook alerts.

Servers run as real processes (`python cli.py serve`) on free ports; webhooks are
real HTTP servers in a thread that record what they receive.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from calib import client
from calib.config import AlertsConfig, load_settings
from calib.errors import InvalidInputError, StoreError, StoreLockedError
from calib.queries import list_runs, run_result
from calib.server import is_loopback
from calib.store.connection import connect
from cli import app
from tests.procs import stop_process
from tests.synth import END, exact_market

ROOT = Path(__file__).resolve().parents[1]
CLI = [sys.executable, str(ROOT / "cli.py")]
runner = CliRunner()
AS_OF = END.isoformat().replace("+00:00", "Z")


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "CALIB_API_TOKEN"}
    return {**env, "PYTHONPATH": str(ROOT), **extra}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def serve(db: Path, log: Path, *args: str, token: str | None = None) -> Iterator[str]:
    """`calib serve` in its own process on a free port; yields the base URL, stops it afterwards."""
    port = _free_port()
    env = _env(**({"CALIB_API_TOKEN": token} if token else {}))
    with log.open("wb") as out:
        proc = subprocess.Popen([*CLI, "serve", "--port", str(port), "--db", str(db), *args],
                                stdout=out, stderr=subprocess.STDOUT, env=env)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"calib serve did not start: {log.read_text()}")
            time.sleep(0.1)
        yield base
    finally:
        stop_process(proc)


def _cli_json(*args: str) -> Any:
    res = subprocess.run([*CLI, *args], capture_output=True, text=True, env=_env(), timeout=120)
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout)


@pytest.fixture(scope="module")
def demo_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A history file with applied multipliers for BTC and ETH (`calib demo-db`)."""
    base = tmp_path_factory.mktemp("demo")
    db = base / "history.duckdb"
    res = subprocess.run([*CLI, "demo-db", "--db", str(db), "--data-dir", str(base / "data"),
                          "--now", "2026-03-01T00:00:00Z"], capture_output=True, text=True, env=_env(), timeout=300)
    assert res.returncode == 0, res.stderr
    return db


@pytest.fixture(scope="module")
def demo_server(demo_db: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with serve(demo_db, tmp_path_factory.mktemp("log") / "serve.log") as base:
        yield base


# ------------------------------------------------------------------ same answer everywhere


@pytest.mark.parametrize("underlying", ["BTC", "ETH"])
def test_state_endpoint_and_client_equal_cli_state(underlying: str, demo_db: Path, demo_server: str) -> None:
    cli = _cli_json("state", "--underlying", underlying, "--db", str(demo_db), "--json")
    http = httpx.get(f"{demo_server}/api/calibration/state", params={"underlying": underlying})
    assert http.status_code == 200
    api = client.applied_multipliers(underlying, db=demo_db)
    assert http.json() == cli == api.to_dict()
    assert api.global_multiplier is not None and api.run_id is not None
    assert set(api.bands) == {"weekly", "monthly", "quarterly"}
    assert api.skew is not None and 0.0 in api.skew.anchors_z
    # The skew in force is the one the applied run was scored with.
    assert list(api.skew.ratios) == run_result(demo_db, api.run_id)["skew"]["current"]  # type: ignore[index]


@pytest.mark.parametrize("underlying", ["BTC", "ETH"])
def test_history_and_run_endpoints_equal_cli(underlying: str, demo_db: Path, demo_server: str) -> None:
    cli = _cli_json("history", "--underlying", underlying, "--limit", "5", "--db", str(demo_db), "--json")
    http = httpx.get(f"{demo_server}/api/calibration/history", params={"underlying": underlying, "limit": 5})
    assert http.status_code == 200
    assert http.json() == cli == client.latest_runs(underlying, limit=5, db=demo_db)
    assert len(cli) == 5 and {r["underlying"] for r in cli} == {underlying}
    live = httpx.get(f"{demo_server}/api/calibration/history",
                     params={"underlying": underlying, "source": "live", "limit": 100}).json()
    assert live and {r["source"] for r in live} == {"live"}
    run_id = cli[0]["run_id"]
    one = httpx.get(f"{demo_server}/api/calibration/runs/{run_id}")
    assert one.status_code == 200
    body = one.json()
    assert body == client.get_run(run_id, db=demo_db)
    assert body["run"]["run_id"] == run_id == body["result"]["run_id"]
    assert body["result"] == run_result(demo_db, run_id)


def test_client_rejects_bad_arguments(demo_db: Path) -> None:
    with pytest.raises(InvalidInputError, match="underlying"):
        client.applied_multipliers("DOGE", db=demo_db)
    with pytest.raises(InvalidInputError, match="limit"):
        client.latest_runs("BTC", limit=0, db=demo_db)
    with pytest.raises(InvalidInputError, match="source"):
        client.latest_runs("BTC", source="backtest", db=demo_db)
    assert client.get_run("no-such-run", db=demo_db) is None
    # No file yet: nothing applied, as `calib state --json` says.
    missing = demo_db.parent / "none.duckdb"
    with pytest.raises(StoreError, match="does not exist"):  # as `calib state` (exit 2) and HTTP (503)
        client.applied_multipliers("BTC", db=missing)
    res = subprocess.run([*CLI, "state", "--underlying", "BTC", "--db", str(missing), "--json"],
                         capture_output=True, text=True, env=_env(), timeout=120)
    assert res.returncode == 2 and "does not exist" in json.loads(res.stdout)["error"]


# ------------------------------------------------------------------ HTTP errors, read-only


@pytest.mark.parametrize(
    ("path", "params", "status", "message"),
    [
        ("/api/calibration/state", {"underlying": "DOGE"}, 400, "DOGE"),
        ("/api/calibration/state", {}, 400, "required"),
        ("/api/calibration/state", {"underlying": "btc"}, 400, "btc"),
        ("/api/calibration/history", {"limit": "0"}, 400, "limit"),
        ("/api/calibration/history", {"limit": "ten"}, 400, "ten"),
        ("/api/calibration/history", {"limit": "100001"}, 400, "limit"),
        ("/api/calibration/history", {"source": "backtest"}, 400, "source"),
        ("/api/calibration/runs/BTC-19990101T000000Z-000000", {}, 404, "not found"),
        ("/api/calibration/nothing", {}, 404, "not found"),
        ("/", {}, 404, "not found"),
    ],
)
def test_bad_requests(demo_server: str, path: str, params: dict[str, str], status: int, message: str) -> None:
    res = httpx.get(demo_server + path, params=params)
    assert res.status_code == status
    assert message in res.json()["error"]


def test_repeated_parameter_is_400(demo_server: str) -> None:
    res = httpx.get(f"{demo_server}/api/calibration/state?underlying=BTC&underlying=ETH")
    assert res.status_code == 400 and "2 times" in res.json()["error"]


@pytest.mark.parametrize("method", ["POST", "PUT", "PATCH", "DELETE"])
@pytest.mark.parametrize("path", ["/api/calibration/state?underlying=BTC", "/api/calibration/history",
                                  "/api/calibration/runs/x", "/healthz"])
def test_no_write_endpoint(demo_server: str, demo_db: Path, method: str, path: str) -> None:
    before = list_runs(demo_db, limit=1000).height
    res = httpx.request(method, demo_server + path, json={"global_multiplier": 9.0})
    assert res.status_code == 405
    assert "read-only" in res.json()["error"]
    assert list_runs(demo_db, limit=1000).height == before


def test_healthz(demo_server: str, demo_db: Path) -> None:
    res = httpx.get(f"{demo_server}/healthz")
    assert res.status_code == 200
    assert res.json() == {"status": "ok", "db": str(demo_db), "db_exists": True, "auth": False}


def test_missing_file_is_503(tmp_path: Path) -> None:
    db = tmp_path / "not-there.duckdb"
    with serve(db, tmp_path / "serve.log") as base:
        assert httpx.get(f"{base}/healthz").json()["db_exists"] is False
        for path in ("/api/calibration/state?underlying=BTC", "/api/calibration/history", "/api/calibration/runs/x"):
            res = httpx.get(base + path)
            assert res.status_code == 503, path
            assert "does not exist" in res.json()["error"]


def test_locked_beyond_retry_is_503_then_recovers(demo_db: Path, tmp_path: Path) -> None:
    """A writer holding the file for 4 s: a 0.5 s read retry answers 503; once it lets go, 200."""
    db = tmp_path / "copy.duckdb"
    db.write_bytes(demo_db.read_bytes())
    holder = subprocess.Popen(
        [sys.executable, "-c", "import duckdb, sys, time\ncon = duckdb.connect(sys.argv[1])\n"
         "print('locked', flush=True)\ntime.sleep(float(sys.argv[2]))\ncon.close()", str(db), "6"],
        stdout=subprocess.PIPE, text=True, env=_env())
    try:
        with serve(db, tmp_path / "serve.log", "--retry-s", "0.5") as base:
            assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
            t0 = time.monotonic()
            res = httpx.get(f"{base}/api/calibration/state", params={"underlying": "BTC"}, timeout=10)
            waited = time.monotonic() - t0
            assert res.status_code == 503
            assert "locked" in res.json()["error"]
            assert waited < 3.0  # bounded: 0.5 s of retry, not the writer's 6 s
            with pytest.raises(StoreLockedError, match="locked"):
                client.applied_multipliers("BTC", db=db, retry_s=0.3)
            holder.wait(timeout=20)
            res = httpx.get(f"{base}/api/calibration/state", params={"underlying": "BTC"})
            assert res.status_code == 200
            assert res.json() == client.applied_multipliers("BTC", db=db).to_dict()
    finally:
        holder.kill()
        holder.wait()
        if holder.stdout is not None:
            holder.stdout.close()


# ------------------------------------------------------------------ bind address and token


@pytest.mark.parametrize(("host", "loopback"), [("127.0.0.1", True), ("127.0.0.53", True), ("::1", True),
                                                ("localhost", True), ("0.0.0.0", False), ("::", False),
                                                ("192.168.1.20", False), ("calib.example.com", False)])
def test_is_loopback(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def test_off_loopback_without_token_refuses_to_start(demo_db: Path) -> None:
    res = subprocess.run([*CLI, "serve", "--host", "0.0.0.0", "--port", str(_free_port()), "--db", str(demo_db)],
                         capture_output=True, text=True, env=_env(), timeout=60)
    assert res.returncode == 2
    assert res.stderr.startswith("Error: binding to 0.0.0.0 (not loopback) needs a bearer token: set CALIB_API_TOKEN")
    assert "Traceback" not in res.stderr and len(res.stderr.strip().splitlines()) == 1


def test_off_loopback_requires_the_token(demo_db: Path, tmp_path: Path) -> None:
    with serve(demo_db, tmp_path / "serve.log", "--host", "0.0.0.0", token="s3cret-token") as base:
        url = f"{base}/api/calibration/state?underlying=BTC"
        assert httpx.get(url).status_code == 401
        assert httpx.get(url, headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert httpx.get(url, headers={"Authorization": "Basic s3cret-token"}).status_code == 401
        ok = httpx.get(url, headers={"Authorization": "Bearer s3cret-token"})
        assert ok.status_code == 200
        assert ok.json() == client.applied_multipliers("BTC", db=demo_db).to_dict()
        runs = httpx.get(f"{base}/api/calibration/history", headers={"Authorization": "Bearer s3cret-token"})
        assert runs.status_code == 200
        assert httpx.get(f"{base}/api/calibration/history").status_code == 401
        health = httpx.get(f"{base}/healthz").json()  # liveness stays open, and tells no path
        assert health == {"status": "ok", "db_exists": True, "auth": True}


# ------------------------------------------------------------------ reads while a writer writes


@pytest.fixture(scope="module")
def two_markets(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    base = tmp_path_factory.mktemp("markets")
    exact_market(base / "a", m_by_dte=((0, 1000, 1.2),), days=3)
    exact_market(base / "b", m_by_dte=((0, 1000, 0.9),), days=3)
    return base / "a", base / "b"


def test_reads_while_a_writer_runs(two_markets: tuple[Path, Path], tmp_path: Path) -> None:
    """HTTP and client reads in other processes than a writer recording runs: none fails, none blocks it."""
    db = tmp_path / "busy.duckdb"
    a, b = two_markets
    writer_runs = 24
    with connect(db, read_only=False):  # an empty, migrated file: every read must succeed from the start
        pass
    with serve(db, tmp_path / "serve.log") as base:
        writer = subprocess.Popen([sys.executable, "-m", "tests.agent_writer", "--db", str(db), "--market-a", str(a),
                                   "--market-b", str(b), "--runs", str(writer_runs)],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env(), cwd=ROOT)
        counts = {"http": 0, "http_failed": 0, "client": 0, "client_failed": 0}
        http_s: list[float] = []
        seen: set[tuple[str, float]] = set()  # (run_id, global) pairs the readers saw
        errors: list[str] = []
        lock = threading.Lock()

        def http_reader() -> None:
            with httpx.Client(base_url=base, timeout=30) as http:
                i = 0
                while writer.poll() is None:
                    path = ("/api/calibration/state?underlying=BTC" if i % 2 == 0
                            else "/api/calibration/history?underlying=BTC&limit=5")
                    i += 1
                    try:
                        t_req = time.monotonic()
                        res = http.get(path)
                        http_s.append(time.monotonic() - t_req)
                        ok, body = res.status_code == 200, res.json()
                        problem = "" if ok else f"{res.status_code} {res.text[:200]}"
                    except (httpx.HTTPError, ValueError) as e:
                        ok, body, problem = False, None, f"{type(e).__name__}: {e}"
                    with lock:
                        counts["http"] += 1
                        if not ok:
                            counts["http_failed"] += 1
                            errors.append(f"http {path}: {problem}")
                        if isinstance(body, dict) and body.get("global_multiplier") is not None:
                            seen.add((body["run_id"], body["global_multiplier"]))

        def client_reader() -> None:
            while writer.poll() is None:
                try:
                    st = client.applied_multipliers("BTC", db=db)
                    ok = True
                except Exception as e:
                    ok, st = False, None
                    errors.append(f"client: {type(e).__name__}: {e}")
                with lock:
                    counts["client"] += 1
                    counts["client_failed"] += 0 if ok else 1
                    if st is not None and st.global_multiplier is not None and st.run_id is not None:
                        seen.add((st.run_id, st.global_multiplier))

        threads = [threading.Thread(target=http_reader), threading.Thread(target=http_reader),
                   threading.Thread(target=client_reader)]
        t0 = time.monotonic()
        for t in threads:
            t.start()
        out, err = writer.communicate(timeout=600)
        for t in threads:
            t.join(timeout=60)
        elapsed = time.monotonic() - t0
        assert writer.returncode == 0, err
        report = json.loads(out.strip().splitlines()[-1])
        print(f"\nconcurrency: {elapsed:.1f} s, writer {report['recorded']}/{report['runs']} runs recorded "
              f"in {report['elapsed_s']:.1f} s; HTTP requests {counts['http']} ({counts['http_failed']} failed), "
              f"client reads {counts['client']} ({counts['client_failed']} failed); {len(seen)} applied states seen; "
              f"HTTP median {sorted(http_s)[len(http_s) // 2] * 1e3:.0f} ms, max {max(http_s) * 1e3:.0f} ms")
        assert report["failures"] == [] and report["recorded"] == writer_runs  # no run lost to the readers
        assert counts["http_failed"] == 0 and counts["client_failed"] == 0, errors[:5]
        assert counts["http"] >= 20 and counts["client"] >= 5
        assert len(seen) >= 2  # the applied state really changed while they read
        # Every state a reader saw was a consistent one: its global is the smoothed value of its run.
        for run_id, global_mult in seen:
            run = client.get_run(run_id, db=db)
            assert run is not None and run["run"]["smoothed_multiplier"] == global_mult
        assert list_runs(db, limit=1000).height == writer_runs
        # ... and once the writer is done, the three answers agree.
        cli = _cli_json("state", "--underlying", "BTC", "--db", str(db), "--json")
        assert httpx.get(f"{base}/api/calibration/state?underlying=BTC").json() == cli
        assert client.applied_multipliers("BTC", db=db).to_dict() == cli


# ------------------------------------------------------------------ alerts


class _Hook:
    """A webhook receiver on 127.0.0.1 that records every POST and answers `status`."""

    def __init__(self, status: int = 204) -> None:
        posts: list[dict[str, Any]] = []
        self.posts = posts

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                posts.append({"path": self.path, "content_type": self.headers.get("Content-Type"),
                              "body": json.loads(body)})
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/calib-secret-path"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> _Hook:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


def _alerts_toml(path: Path, url: str, *, on: str = '["failed", "degraded"]', retries: int = 2) -> None:
    path.write_text(f'[alerts]\nwebhook_url = "{url}"\non = {on}\ntimeout_s = 2.0\nretries = {retries}\n'
                    "backoff_s = 0.05\n")


def _refusing_url() -> str:
    return f"http://127.0.0.1:{_free_port()}/hook"  # nothing listens there any more


@pytest.fixture
def bound_market(tmp_path: Path) -> Path:
    """A market no realistic multiplier fits: every calibration on it fails (exit 3)."""
    root = tmp_path / "bound"
    exact_market(root, m_by_dte=((0, 1000, 5.0),), days=3)
    return root


def _auto(root: Path, db: Path, *extra: str):  # type: ignore[no-untyped-def]
    return runner.invoke(app, ["auto-calibrate", "--underlying", "BTC", "--data-dir", str(root), "--db", str(db),
                               "--as-of", AS_OF, "--lookback-days", "2", "--dte-min", "0", *extra])


def test_failed_auto_calibration_posts_exactly_one_alert(bound_market: Path, db_path: Path, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = tmp_path / "calib.toml"
    with _Hook() as hook:
        _alerts_toml(cfg, hook.url)
        monkeypatch.setenv("CALIB_CONFIG", str(cfg))
        res = _auto(bound_market, db_path, "--json")
    assert res.exit_code == 3
    run = json.loads(res.stdout)  # stdout stays one JSON document
    assert len(hook.posts) == 1
    post = hook.posts[0]
    assert post["path"] == "/hooks/calib-secret-path" and post["content_type"] == "application/json"
    body = post["body"]
    assert body["status"] == "failed" and body["run_id"] == run["run_id"]
    assert (body["underlying"], body["source"], body["applied"]) == ("BTC", "harvested", False)
    assert body["reason"] == run["reason"] and "Unrealistic auto-calibration" in body["reason"]
    assert body["recommended_multiplier"] == run["global_metrics"]["recommended_iv_multiplier"]
    assert body["vega_weighted_mae_pct"] == run["global_metrics"]["vega_weighted_mae_pct"]
    assert "http" not in json.dumps(body)  # link-free
    assert list_runs(db_path)["run_id"].to_list() == [run["run_id"]]
    assert "alert: posted failed run" in res.stderr and "calib-secret-path" not in res.stderr


def test_ok_run_sends_no_alert_unless_asked(exact_harvest: Path, db_path: Path, tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = tmp_path / "calib.toml"
    monkeypatch.setenv("CALIB_CONFIG", str(cfg))
    with _Hook() as hook:
        _alerts_toml(cfg, hook.url)
        assert _auto(exact_harvest, db_path).exit_code == 0
        assert hook.posts == []
        _alerts_toml(cfg, hook.url, on='["ok"]')
        assert _auto(exact_harvest, db_path).exit_code == 0
        assert [p["body"]["status"] for p in hook.posts] == ["ok"]


def test_failed_live_run_alerts_with_its_policy(bound_market: Path, db_path: Path, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = tmp_path / "calib.toml"
    with _Hook() as hook:
        _alerts_toml(cfg, hook.url)
        monkeypatch.setenv("CALIB_CONFIG", str(cfg))
        res = runner.invoke(app, ["calibrate-live", "--underlying", "BTC", "--replay", str(bound_market),
                                  "--db", str(db_path), "--dte-min", "0", "--json"])
    assert res.exit_code == 3, res.output
    (post,) = hook.posts
    assert post["body"]["source"] == "live" and post["body"]["status"] == "failed"
    assert post["body"]["policy_decision"] == "skipped"
    assert post["body"]["run_id"] == json.loads(res.stdout)["run_id"]


@pytest.mark.parametrize("receiver", ["500", "refused"])
def test_undeliverable_alert_keeps_run_and_exit_code(receiver: str, bound_market: Path, db_path: Path,
                                                     tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = tmp_path / "calib.toml"
    monkeypatch.setenv("CALIB_CONFIG", str(cfg))
    with _Hook(status=500) as hook:
        _alerts_toml(cfg, hook.url if receiver == "500" else _refusing_url(), retries=2)
        res = _auto(bound_market, db_path, "--json")
    assert res.exit_code == 3  # unchanged: the failed run's code, not an alert error
    run = json.loads(res.stdout)
    assert list_runs(db_path)["run_id"].to_list() == [run["run_id"]]
    if receiver == "500":
        assert len(hook.posts) == 3  # first attempt + 2 retries, then give up
    lines = [ln for ln in res.stderr.splitlines() if ln.startswith("alert:")]
    assert len(lines) == 1
    assert "after 3 attempt(s)" in lines[0] and "the run is recorded" in lines[0]
    assert ("HTTP 500" if receiver == "500" else "ConnectError") in lines[0]
    assert "Traceback" not in res.stderr


def test_undeliverable_alert_in_a_subprocess(bound_market: Path, tmp_path: Path) -> None:
    """The console script end to end: exit 3 with a refusing webhook, the run recorded."""
    cfg, db = tmp_path / "calib.toml", tmp_path / "h.duckdb"
    _alerts_toml(cfg, _refusing_url(), retries=1)
    res = subprocess.run([*CLI, "auto-calibrate", "--underlying", "BTC", "--data-dir", str(bound_market),
                          "--db", str(db), "--as-of", AS_OF, "--lookback-days", "2", "--dte-min", "0"],
                         capture_output=True, text=True, env=_env(CALIB_CONFIG=str(cfg)), timeout=120)
    assert res.returncode == 3, res.stderr
    assert list_runs(db)["status"].to_list() == ["failed"]
    assert "alert: could not post the failed alert" in res.stderr


@pytest.mark.parametrize(("toml", "message"), [
    ('webhook_url = "ftp://x"', "http"),
    ('webhook_url = "http://x"\non = ["broken"]', "statuses"),
    ('webhook_url = "http://x"\nretries = -1', "retries"),
    ('webhook_url = "http://x"\ntimeout_s = 0', "timeout_s"),
    ('webhok_url = "http://x"', "webhok_url"),
])
def test_bad_alerts_settings_are_one_line(toml: str, message: str, tmp_path: Path, exact_harvest: Path,
                                          db_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = tmp_path / "calib.toml"
    cfg.write_text(f"[alerts]\n{toml}\n")
    with pytest.raises(InvalidInputError, match=message):
        load_settings(cfg)
    monkeypatch.setenv("CALIB_CONFIG", str(cfg))
    res = _auto(exact_harvest, db_path)
    assert res.exit_code == 2 and message in res.stderr
    assert not db_path.exists()  # refused before anything ran


def test_alerts_defaults_are_off() -> None:
    assert not AlertsConfig().enabled
    assert AlertsConfig(webhook_url="").webhook_url is None
    assert AlertsConfig(webhook_url="https://h", on="failed").on == ("failed",)  # type: ignore[arg-type]


def test_duckdb_file_unlocked_after_server_reads(demo_db: Path, demo_server: str) -> None:
    """The server holds no connection between requests: a writer can open the file right after a read."""
    assert httpx.get(f"{demo_server}/api/calibration/state?underlying=BTC").status_code == 200
    with connect(demo_db, read_only=False, retry_s=0):  # "Conflicting lock is held" if the server kept it
        pass


def test_readme_python_example_runs(demo_db: Path, tmp_path: Path) -> None:
    """The five-line example in the README, as written, in a directory holding data/calibration.duckdb."""
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## For the agent: read API, HTTP, alerts, scheduling"):]
    code = section[section.index("```python\n") + len("```python\n"):]
    code = code[:code.index("```")]
    assert len(code.strip().splitlines()) == 5
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "calibration.duckdb").write_bytes(demo_db.read_bytes())
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, env=_env(),
                         timeout=60)
    assert res.returncode == 0, res.stderr
    st = client.applied_multipliers("BTC", db=demo_db)
    assert res.stdout.split()[0] == st.run_id


def test_taken_port_is_one_line_exit_1(demo_db: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        res = subprocess.run([*CLI, "serve", "--port", str(port), "--db", str(demo_db)],
                             capture_output=True, text=True, env=_env(), timeout=60)
    assert res.returncode == 1
    assert res.stderr.strip() == f"Error: cannot listen on 127.0.0.1:{port}: Address already in use"


def test_port_0_serves_on_the_port_it_announces(demo_db: Path, tmp_path: Path) -> None:
    log = tmp_path / "serve.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([*CLI, "serve", "--port", "0", "--db", str(demo_db)], stdout=out,
                                stderr=subprocess.STDOUT, env=_env())
    try:
        deadline = time.monotonic() + 30
        while "calib serve: http://" not in log.read_text():
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        line = next(ln for ln in log.read_text().splitlines() if ln.startswith("calib serve: "))
        url = line.split()[2]
        assert url.startswith("http://127.0.0.1:") and not url.startswith("http://127.0.0.1:0/")
        for _ in range(100):
            try:
                res = httpx.get(url, timeout=2)
                break
            except httpx.TransportError:
                time.sleep(0.1)
        assert res.status_code == 200 and res.json()["underlying"] == "BTC"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_readers_defer_to_a_waiting_writer_but_not_to_a_stale_one(demo_db: Path, tmp_path: Path) -> None:
    from calib.store.connection import WRITER_INTENT_SUFFIX
    from calib.store.read_retry import lock_wait

    db = tmp_path / "h.duckdb"
    db.write_bytes(demo_db.read_bytes())
    intent = db.with_name(db.name + WRITER_INTENT_SUFFIX)
    intent.touch()  # a writer waiting right now
    t0 = time.monotonic()
    with lock_wait(0.4), connect(db, read_only=True):
        pass
    assert time.monotonic() - t0 >= 0.35  # held off for its whole wait (the file is free, so it opened)
    os.utime(intent, (time.time() - 5, time.time() - 5))  # a writer killed while waiting
    t0 = time.monotonic()
    with lock_wait(0.4), connect(db, read_only=True):
        pass
    assert time.monotonic() - t0 < 0.3


def test_waiting_writer_announces_itself_and_cleans_up(demo_db: Path, tmp_path: Path) -> None:
    from calib.store.connection import WRITER_INTENT_SUFFIX

    db = tmp_path / "h.duckdb"
    db.write_bytes(demo_db.read_bytes())
    intent = db.with_name(db.name + WRITER_INTENT_SUFFIX)
    reader = subprocess.Popen(
        [sys.executable, "-c", "import duckdb, sys, time\ncon = duckdb.connect(sys.argv[1], read_only=True)\n"
         "print('reading', flush=True)\ntime.sleep(1.5)\ncon.close()", str(db)],
        stdout=subprocess.PIPE, text=True, env=_env())
    try:
        assert reader.stdout is not None and reader.stdout.readline().strip() == "reading"
        seen = threading.Event()

        def watch() -> None:
            while reader.poll() is None:
                if intent.exists():
                    seen.set()
                time.sleep(0.01)

        watcher = threading.Thread(target=watch)
        watcher.start()
        with connect(db, read_only=False, retry_s=10):  # waits for the reader to let go
            pass
        watcher.join()
        assert seen.is_set() and not intent.exists()
    finally:
        reader.kill()
        reader.wait()
        if reader.stdout is not None:
            reader.stdout.close()

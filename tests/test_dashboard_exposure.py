"""The dashboard listens on loopback only (issue 13, defect 4): `.streamlit/config.toml`.

It has a Force-Apply button and no login, so `streamlit run app.py` from the
project directory must bind 127.0.0.1, send no usage statistics and show no
developer toolbar. Checked twice: the options Streamlit itself loads, and a real
server's listening socket.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

from tests.procs import stop_process

ROOT = Path(__file__).resolve().parents[1]


def _env(tmp_path: Path) -> dict[str, str]:
    # A fresh HOME: no ~/.streamlit/config.toml of the developer's can mask the project's file.
    return {**os.environ, "HOME": str(tmp_path), "CALIB_DB": str(tmp_path / "none.duckdb"),
            "CALIB_CONFIG": str(tmp_path / "none.toml")}


def test_streamlit_loads_the_project_config(tmp_path: Path) -> None:
    probe = (
        "import json; from streamlit import config as c; "
        "names = ['server.address', 'browser.gatherUsageStats', 'client.toolbarMode']; "
        "print(json.dumps({n: [c.get_option(n), c.get_where_defined(n)] for n in names}))"
    )
    out = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, env=_env(tmp_path), capture_output=True,
                         text=True, timeout=60, check=True)
    where = str(ROOT / ".streamlit" / "config.toml")
    assert json.loads(out.stdout.strip().splitlines()[-1]) == {
        "server.address": ["127.0.0.1", where],
        "browser.gatherUsageStats": [False, where],
        "client.toolbarMode": ["minimal", where],
    }


def _outward_ipv4() -> str | None:
    """This machine's address on its default route (no packet is sent), if it has one."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("10.255.255.255", 1))
            ip = str(s.getsockname()[0])
        except OSError:
            return None
    return None if ip.startswith("127.") else ip


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _accepts(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def test_streamlit_run_listens_on_loopback_only(tmp_path: Path) -> None:
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", "app.py", "--server.headless", "true", "--server.port", str(port)],
        cwd=ROOT, env=_env(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(proc.stdout.readline, "")), daemon=True)  # type: ignore[union-attr]
    reader.start()
    try:
        deadline = time.monotonic() + 60
        # The URL lines are printed once the server listens: wait for them, then probe.
        while not any("URL:" in line for line in lines):
            assert proc.poll() is None, f"streamlit exited with {proc.returncode}: {''.join(lines)}"
            assert time.monotonic() < deadline, "streamlit did not start within 60 s"
            time.sleep(0.1)
        time.sleep(0.3)  # let it finish printing every URL it prints
        assert _accepts("127.0.0.1", port)
        outward = _outward_ipv4()
        if outward is not None:
            assert not _accepts(outward, port), f"dashboard reachable on {outward}:{port}"
    finally:
        stop_process(proc)
        reader.join(timeout=10)
        proc.stdout.close()  # type: ignore[union-attr]
    out = "".join(lines)
    assert f"URL: http://127.0.0.1:{port}" in out
    assert "Network URL" not in out and "External URL" not in out

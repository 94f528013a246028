"""Stopping the real servers tests start (calib serve, streamlit): terminate, then kill if it hangs."""

from __future__ import annotations

import subprocess


def stop_process(proc: subprocess.Popen[str], timeout_s: float = 10.0) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=timeout_s)

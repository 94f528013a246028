"""Fresh processes, measured: wall time and the child's own peak RSS; the command lines they run."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import tempfile
import time
from pathlib import Path

from calib.bench.common import BENCH_END


def project_root() -> Path:
    """Directory holding the `calib` package (and `cli.py`) this process imported."""
    return Path(__file__).resolve().parents[2]


def cli_path() -> Path:
    spec = importlib.util.find_spec("cli")
    local = project_root() / "cli.py"
    if local.is_file():
        return local
    if spec is None or spec.origin is None:
        raise RuntimeError("cannot find cli.py (the calib command line)")
    return Path(spec.origin)


def compile_bytecode(root: Path | None = None) -> int:
    """Write the bytecode of calib and cli.py under `root` (this project by default; `compileall`); returns how many sources failed to compile.

    A first run leaves it (Python caches what it imports), so a user's runs import
    compiled modules. Where ``PYTHONDONTWRITEBYTECODE`` is set on a checkout that was
    never compiled (an editable install does not compile), every fresh process would
    instead compile calib's ~50 modules (~50 ms) and the benchmark would time that.
    Existing bytecode is read either way; this only writes what is missing or stale.
    """
    import compileall

    root = project_root() if root is None else root
    ok = compileall.compile_dir(root / "calib", quiet=1)
    if (root / "cli.py").is_file():
        ok = compileall.compile_file(root / "cli.py", quiet=1) and ok
    return 0 if ok else 1


def child_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(project_root()), *filter(None, [env.get("PYTHONPATH")])])
    return env


def run_measured(cmd: list[str], *, timeout: float | None = None) -> tuple[int, str, str, float, float]:
    """Run `cmd`; returns (exit code, stdout, stderr, wall s, peak RSS MB of that process alone).

    The peak is the child's own `VmHWM` (polled from /proc while it runs, once it
    has exec'd): Linux carries the parent's high-water mark into a forked child's
    `ru_maxrss`, so a benchmark process that has loaded data would report its own
    size for every child. `ru_maxrss` is the fallback where /proc is missing.
    """
    argv = "\0".join(cmd).encode() + b"\0"
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, env=child_env())
        deadline = None if timeout is None else t0 + timeout
        hwm_kb = 0
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            hwm_kb = max(hwm_kb, vm_hwm_kb(proc.pid, argv))
            if deadline is not None and time.perf_counter() > deadline:
                proc.kill()
                _, status, usage = os.wait4(proc.pid, 0)
                break
            time.sleep(0.005)
        wall = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        return (proc.returncode, out.read().decode(), err.read().decode(), wall,
                (hwm_kb or usage.ru_maxrss) / 1024.0)  # Linux reports KiB


def vm_hwm_kb(pid: int, argv: bytes) -> int:
    """`VmHWM` of `pid` in KiB once it runs `argv` (0 before its exec, or without /proc)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            if fh.read() != argv:
                return 0
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return 0
    return 0


def import_time_s(cmd: list[str], *, ok_codes: tuple[int, ...] = (0,)) -> float:
    """Seconds a fresh `cmd` (a python command line) spends importing: `-X importtime` self times summed.

    Every import the process makes is counted, when it happens (deferred ones too).
    """
    proc = subprocess.run([cmd[0], "-X", "importtime", *cmd[1:]], capture_output=True, text=True, env=child_env(),
                          check=False)
    if proc.returncode not in ok_codes:
        raise RuntimeError(f"{' '.join(cmd[1:3])} failed (exit {proc.returncode}): {proc.stderr.strip()[-2000:]}")
    total_us = 0
    for line in proc.stderr.splitlines():
        if line.startswith("import time:"):
            self_us = line.split(":", 1)[1].split("|", 1)[0].strip()
            if self_us.isdigit():  # the header line says "self [us]"
                total_us += int(self_us)
    return total_us / 1e6


def cli_args(data_dir: Path, window_days: float, db: Path) -> list[str]:
    return ["auto-calibrate", "--underlying", "BTC", "--data-dir", str(data_dir),
            "--as-of", BENCH_END.isoformat().replace("+00:00", "Z"), "--lookback-days", f"{window_days:g}",
            "--db", str(db), "--json"]


def create_history(db: Path) -> None:
    """An empty, migrated history file: runs record into an existing file, as every run after a trader's first."""
    from calib.store.connection import connect

    with connect(db, read_only=False):
        pass

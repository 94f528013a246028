"""A real full volume (issue 13, defect 5): a 2 MB tmpfs in a private mount namespace.

`unshare --user --map-root-user --mount` lets an unprivileged user mount a tmpfs
that only the child process sees (and that vanishes with it). Inside, a driver
writes a day of snapshot files, fills the volume, then runs the harvester
(against the fake Deribit on 127.0.0.1 in this process) and `calib compact`,
frees the space and runs both again. Skipped where user namespaces are off.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.fake_deribit import FakeDeribit

ROOT = Path(__file__).resolve().parents[1]

DRIVER = textwrap.dedent('''
    import errno, json, os, subprocess, sys
    from datetime import UTC, datetime, timedelta
    from pathlib import Path
    import polars as pl
    from calib.data.layout import list_parquet_files
    from calib.sources.deribit import DeribitClient
    from calib.sources.harvester import harvest_once, run_harvester

    vol, base_url, repo = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
    data = vol / "data"
    day = datetime(2026, 1, 5, tzinfo=UTC)
    old = data / "BTC" / f"date={day:%Y-%m-%d}"
    with DeribitClient(base_url=base_url, max_retries=0) as client:
        for i in range(3):
            (entry,) = harvest_once(client, ["BTC"], vol / "seed")
            old.mkdir(parents=True, exist_ok=True)
            pl.read_parquet(entry.path).with_columns(
                pl.lit(day + timedelta(minutes=5 * i)).cast(pl.Datetime("ms", "UTC")).alias("snapshot_ts")
            ).write_parquet(old / f"snapshot_{i}.parquet")

        fd = os.open(vol / "filler", os.O_WRONLY | os.O_CREAT)
        try:
            while True:
                os.write(fd, b"x" * 65536)
        except OSError as e:
            assert e.errno == errno.ENOSPC, e
        os.close(fd)

        def state():
            files = list_parquet_files(data, "BTC") + list_parquet_files(data, "ETH")
            return {"old_day": sorted(p.name for p in old.iterdir()),
                    "rows": {p.name: pl.read_parquet(p).height for p in files},
                    "hidden": [str(p) for p in data.rglob(".*")]}

        def compact():
            r = subprocess.run([sys.executable, f"{repo}/cli.py", "compact", "-u", "BTC", "--data-dir", str(data),
                                "--date", "2026-01-05"], capture_output=True, text=True)
            return {"code": r.returncode, "out": r.stdout + r.stderr}

        out = {}
        lines = []
        s = run_harvester(client, ["BTC", "ETH"], data, 60.0, max_iterations=3, sleep=lambda _: None,
                          log=lines.append, compact=False)
        out["full"] = {"failures": s.failures, "written": s.snapshots_written, "lines": lines,
                       "compact": compact(), **state()}
        os.unlink(vol / "filler")
        lines = []
        s = run_harvester(client, ["BTC"], data, 60.0, once=True, log=lines.append, compact=False)
        out["freed"] = {"failures": s.failures, "written": s.snapshots_written, "compact": compact(), **state()}
    print(json.dumps(out))
''')


def _unshare_tmpfs_works(tmp_path: Path) -> bool:
    if shutil.which("unshare") is None:
        return False
    probe = subprocess.run(["unshare", "--user", "--map-root-user", "--mount", "sh", "-c",
                            'mount -t tmpfs -o size=64k tmpfs "$0"', str(tmp_path)],
                           capture_output=True, timeout=30, check=False)
    return probe.returncode == 0


def test_harvest_and_compact_on_a_full_volume(fake: FakeDeribit, tmp_path: Path) -> None:
    vol = tmp_path / "vol"
    vol.mkdir()
    if not _unshare_tmpfs_works(vol):
        pytest.skip("needs `unshare --user --mount` and tmpfs (user namespaces)")
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER)
    proc = subprocess.run(
        ["unshare", "--user", "--map-root-user", "--mount", "sh", "-c",
         'mount -t tmpfs -o size=2m tmpfs "$0" && exec "$@"', str(vol),
         sys.executable, str(driver), str(vol), fake.base_url, str(ROOT)],
        capture_output=True, text=True, timeout=120, check=False, env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    full, freed = out["full"], out["freed"]
    # every poll on the full volume failed, was logged with its class, and the loop went on
    assert full["failures"] == 6 and full["written"] == 0
    failed = [line for line in full["lines"] if "poll failed" in line]
    assert len(failed) == 6 and all("No space left on device" in line for line in failed), failed
    assert full["hidden"] == []  # no temp file left behind
    # compact: one clear line, exit 1, the day's files untouched and readable
    assert full["compact"]["code"] == 1
    assert "Traceback" not in full["compact"]["out"]
    assert full["compact"]["out"].count("\n") == 1 and full["compact"]["out"].startswith("Error: could not write")
    assert full["old_day"] == ["snapshot_0.parquet", "snapshot_1.parquet", "snapshot_2.parquet"]
    assert list(full["rows"].values()) == [12, 12, 12]
    # room again: the next poll writes, the same compact command merges the day
    assert freed["written"] == 1 and freed["failures"] == 0
    assert freed["compact"]["code"] == 0, freed["compact"]["out"]
    assert freed["old_day"] == ["compact_2026-01-05.parquet"]
    assert freed["rows"]["compact_2026-01-05.parquet"] == 36 and freed["hidden"] == []

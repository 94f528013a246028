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


DB_DRIVER = textwrap.dedent('''
    # Writes to a history file on a full volume, then frees it; prints each command's outcome as JSON.
    import json, os, subprocess, sys
    from pathlib import Path

    vol, market, repo = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
    db = str(vol / "history.duckdb")

    def calib(*args):
        r = subprocess.run([sys.executable, f"{repo}/cli.py", *args], capture_output=True, text=True)
        return {"code": r.returncode, "out": r.stdout, "err": r.stderr}

    live = ("calibrate-live", "-u", "BTC", "--replay", market, "--db", db, "--dte-min", "0", "--json")
    auto = ("auto-calibrate", "-u", "BTC", "--data-dir", market, "--db", db, "--dte-min", "0",
            "--lookback-days", "2", "--json")
    force = ("apply", "--force", "-u", "BTC", "--db", db)
    out = {"seed": [calib(*live), calib(*live)]}  # applied by the policy, then skipped (cooldown)
    fd = os.open(vol / "filler", os.O_WRONLY | os.O_CREAT)
    try:
        while True:
            os.write(fd, b"x" * 65536)
    except OSError:
        pass
    os.close(fd)
    out["full"] = {"live": calib(*live), "auto": calib(*auto), "force": calib(*force)}
    out["full_history"] = calib("history", "--db", db, "--json", "--limit", "50")
    out["full_state"] = calib("state", "-u", "BTC", "--db", db, "--json")
    os.unlink(vol / "filler")
    out["freed"] = {"history": calib("history", "--db", db, "--json", "--limit", "50"),
                    "state": calib("state", "-u", "BTC", "--db", db, "--json"),
                    "force": calib(*force), "live": calib(*live)}
    out["after"] = {"history": calib("history", "--db", db, "--json", "--limit", "50"),
                    "state": calib("state", "-u", "BTC", "--db", db, "--json")}
    print(json.dumps(out))
''')


def test_history_writes_on_a_full_volume(tmp_path: Path) -> None:
    """Issue 13, defect 5 (store): a failed COMMIT is one clear line, exit 1, and the file keeps its state."""
    from tests.synth import exact_market

    vol = tmp_path / "vol"
    vol.mkdir()
    if not _unshare_tmpfs_works(vol):
        pytest.skip("needs `unshare --user --mount` and tmpfs (user namespaces)")
    market = tmp_path / "market"  # the harvest lives off the full volume; only the history file is on it
    exact_market(market, m_by_dte=((0, 1000, 1.2),), days=9)
    driver = tmp_path / "db_driver.py"
    driver.write_text(DB_DRIVER)
    proc = subprocess.run(
        ["unshare", "--user", "--map-root-user", "--mount", "sh", "-c",
         'mount -t tmpfs -o size=4m tmpfs "$0" && exec "$@"', str(vol),
         sys.executable, str(driver), str(vol), str(market), str(ROOT)],
        capture_output=True, text=True, timeout=300, check=False,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "CALIB_CONFIG": str(tmp_path / "none.toml")})
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    first, second = (json.loads(r["out"]) for r in out["seed"])
    assert (first["policy"]["decision"], second["policy"]["decision"]) == ("applied", "skipped")
    faults = out["full"]
    for name, r in faults.items():
        assert r["code"] == 1, (name, r)
        assert "Traceback" not in r["err"] + r["out"], (name, r["err"])
        errors = [line for line in r["err"].splitlines() if line.startswith("Error:")]
        assert len(errors) == 1 and "the disk is full" in errors[0] and "No space left on device" in errors[0], r
        assert "no transaction is active" not in r["err"]
    # Reads still work on the full volume, and show the state before the failed writes.
    before = json.loads(out["full_history"]["out"])
    assert [r["run_id"] for r in before] == [second["run_id"], first["run_id"]]
    assert json.loads(out["full_state"]["out"])["run_id"] == first["run_id"]
    # Room again: the same file, nothing half-written; the same commands now work.
    assert json.loads(out["freed"]["history"]["out"]) == before
    assert out["freed"]["force"]["code"] == 0, out["freed"]["force"]
    assert out["freed"]["live"]["code"] == 0, out["freed"]["live"]
    after = json.loads(out["after"]["history"]["out"])
    assert len(after) == 3
    assert json.loads(out["after"]["state"]["out"])["global_multiplier"] == pytest.approx(
        second["policy"]["smoothed_multiplier"])

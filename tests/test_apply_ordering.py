"""Issue 13, defect 1: every timestamp inside the write transaction, "newest" by commit order.

A Force-Apply that waited for the lock used to record the time it *started*:
a run created while it waited was marked applied before it was created and
`applied_multipliers_log` ran backwards. These tests race real processes on a
real DuckDB file in a temp dir (replayed harvests, no network).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import duckdb
import pytest

from calib.config import PolicyConfig
from calib.live import force_apply_latest
from calib.store.connection import connect
from calib.store.migrations import SCHEMA_VERSION, migrate
from tests.synth import exact_market

ROOT = Path(__file__).resolve().parents[1]

# The checks of notes/DUCKDB_SCHEMA.md ("Ordering: seq and applied_seq"); each returns the offending rows.
INVARIANT_SQL = """
SELECT r.underlying, r.run_id, r.smoothed_multiplier, a.multiplier, a.run_id
FROM (SELECT *, row_number() OVER (PARTITION BY underlying ORDER BY applied_seq DESC NULLS LAST, applied_at DESC) AS k
      FROM calibration_runs WHERE source = 'live' AND applied) r
JOIN current_applied_multipliers a ON a.underlying = r.underlying AND a.scope = 'global'
WHERE r.k = 1 AND (r.smoothed_multiplier IS DISTINCT FROM a.multiplier OR r.run_id IS DISTINCT FROM a.run_id)
"""
APPLIED_BEFORE_CREATED_SQL = "SELECT run_id FROM calibration_runs WHERE applied AND applied_at < created_at"
LOG_BACKWARDS_SQL = """
SELECT change_id FROM (SELECT change_id, changed_at, lag(changed_at) OVER (ORDER BY change_id) AS prev
                       FROM applied_multipliers_log) WHERE changed_at < prev
"""
SEQ_SQL = """
SELECT count(*) - count(DISTINCT seq) + count(*) FILTER (WHERE seq IS NULL)
     + count(*) FILTER (WHERE applied AND applied_seq IS NULL) FROM calibration_runs
"""


def _breaks(db: Path) -> dict[str, int]:
    with connect(db, read_only=True) as con:
        return {
            "invariant": len(con.execute(INVARIANT_SQL).fetchall()),
            "applied_before_created": len(con.execute(APPLIED_BEFORE_CREATED_SQL).fetchall()),
            "log_backwards": len(con.execute(LOG_BACKWARDS_SQL).fetchall()),
            "seq_gaps_or_nulls": int(con.execute(SEQ_SQL).fetchone()[0]),  # type: ignore[index]
        }


@pytest.fixture(scope="module")
def markets(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("markets")
    out = {}
    for name, m in (("m120", 1.2), ("m090", 0.9)):
        exact_market(base / name, m_by_dte=((0, 1000, m),), days=9)
        out[name] = base / name
    return out


def _env(config: Path | None = None) -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    if config is not None:
        env["CALIB_CONFIG"] = str(config)
    return env


def _policy_file(tmp: Path, name: str, cooldown_minutes: int) -> Path:
    p = tmp / name
    p.write_text(f"[policy]\nmin_samples = 10\ncooldown_minutes = {cooldown_minutes}\ndeadband = 0.0\n"
                 "max_step = 0.05\newma_alpha = 0.5\n")
    return p


def _live_cmd(market: Path, db: Path) -> list[str]:
    return [sys.executable, str(ROOT / "cli.py"), "calibrate-live", "--underlying", "BTC", "--replay", str(market),
            "--db", str(db), "--dte-min", "0", "--json"]


HOLDER = textwrap.dedent('''
    # Holds the history file, then creates and records a live run while still holding it.
    import sys, time
    from dataclasses import replace
    from pathlib import Path
    from calib.config import CalibrationConfig, HarvestConfig, PolicyConfig, SkewConfig
    from calib.live import record_live_run, run_calibration_extended
    from calib.store.connection import connect

    db, market = Path(sys.argv[1]), Path(sys.argv[2])
    flat = SkewConfig(anchors_z=(-2.0, -1.0, 0.0, 1.0, 2.0), current_ratios=(1.0,) * 5)
    cfg = CalibrationConfig(underlying="BTC", source="live", min_dte=0.0, max_dte=10.0, replay=True, skew=flat,
                            harvest=HarvestConfig(data_root=market), multiplier_tested=1.05)
    skip = PolicyConfig(min_samples=10, cooldown_minutes=600, max_step=0.05, ewma_alpha=0.5)
    with connect(db, read_only=False):
        print("locked", flush=True)
        time.sleep(1.0)
        result = run_calibration_extended(cfg)  # created_at: after the Force-Apply below started waiting
        record_live_run(db, result, skip)
        time.sleep(0.3)
''')


def test_force_apply_that_waited_for_the_lock_is_not_dated_before_the_run(
        markets: dict[str, Path], db_path: Path) -> None:
    seed = subprocess.run(_live_cmd(markets["m120"], db_path), capture_output=True, text=True,
                          env=_env(_policy_file(db_path.parent, "apply.toml", 0)), timeout=120)
    assert seed.returncode == 0, seed.stderr
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(db_path), str(markets["m090"])],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env())
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "locked", holder.stderr.read() if holder.stderr else ""
        started = time.time()
        res = force_apply_latest(db_path, "BTC")  # waits for the holder's lock
        waited_s = time.time() - started
    finally:
        _, err = holder.communicate(timeout=120)
    assert holder.returncode == 0, err
    assert waited_s > 0.5  # it really waited
    assert not res.already_applied  # it applied the run created while it waited
    with connect(db_path, read_only=True) as con:
        created_at, applied_at = con.execute("SELECT created_at, applied_at FROM calibration_runs WHERE run_id = ?",
                                             [res.run_id]).fetchone()  # type: ignore[misc]
    assert applied_at >= created_at
    assert _breaks(db_path) == {"invariant": 0, "applied_before_created": 0, "log_backwards": 0,
                                "seq_gaps_or_nulls": 0}


ROUNDS = 8
LIVE_PER_ROUND = 4
APPLY_PER_ROUND = 4


def test_stress_concurrent_live_runs_and_force_applies_keep_the_invariant(
        markets: dict[str, Path], db_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """ROUNDS rounds of concurrent calibrate-live (policy applies or skips) and apply --force processes."""
    applying = _policy_file(db_path.parent, "apply.toml", 0)
    cooling = _policy_file(db_path.parent, "cool.toml", 600)
    seed = subprocess.run(_live_cmd(markets["m120"], db_path), capture_output=True, text=True,
                          env=_env(applying), timeout=120)
    assert seed.returncode == 0, seed.stderr
    apply_cmd = [sys.executable, str(ROOT / "cli.py"), "apply", "--force", "--underlying", "BTC", "--db", str(db_path)]
    races, breaks, failures = 0, [], []
    t0 = time.monotonic()
    for r in range(ROUNDS):
        procs = []
        for i in range(max(LIVE_PER_ROUND, APPLY_PER_ROUND)):
            if i < LIVE_PER_ROUND:
                market = markets["m090" if (r + i) % 2 else "m120"]
                procs.append(subprocess.Popen(_live_cmd(market, db_path), stdout=subprocess.PIPE,
                                              stderr=subprocess.PIPE, text=True,
                                              env=_env(applying if i % 2 else cooling)))
            if i < APPLY_PER_ROUND:
                procs.append(subprocess.Popen(apply_cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                              env=_env()))
        for p in procs:
            _, err = p.communicate(timeout=180)
            if p.returncode != 0:
                failures.append((p.args[3], p.returncode, err.strip()[-300:]))
        races += 1
        b = _breaks(db_path)
        if any(b.values()):
            breaks.append((r, b))
    with connect(db_path, read_only=True) as con:
        n_runs, n_applied = con.execute("SELECT count(*), count(*) FILTER (WHERE applied) FROM calibration_runs"
                                        ).fetchone()  # type: ignore[misc]
    with capsys.disabled():
        print(f"\n[apply-ordering stress] rounds={races} processes={races * (LIVE_PER_ROUND + APPLY_PER_ROUND)} "
              f"runs={n_runs} applied={n_applied} invariant_breaks={len(breaks)} "
              f"wall={time.monotonic() - t0:.1f}s")
    assert failures == []
    assert breaks == []
    assert n_runs == 1 + ROUNDS * LIVE_PER_ROUND
    assert n_applied >= 2  # both the policy and Force-Apply applied runs


def test_migration_4_backfills_seq_and_applied_seq(markets: dict[str, Path], db_path: Path) -> None:
    """A file written at schema 3 gets seq in created_at order and applied_seq from the log."""
    con = duckdb.connect(str(db_path))
    migrate(con, upto=3)
    con.execute("""INSERT INTO calibration_runs (run_id, created_at, source, underlying, status, applied, applied_at,
                   smoothed_multiplier) VALUES
                   ('b', '2026-01-02 00:00:00+00', 'live', 'BTC', 'ok', true, '2026-01-02 00:00:01+00', 1.1),
                   ('a', '2026-01-01 00:00:00+00', 'live', 'BTC', 'ok', true, '2026-01-01 00:00:01+00', 1.0),
                   ('c', '2026-01-03 00:00:00+00', 'harvested', 'BTC', 'ok', false, NULL, NULL)""")
    con.execute("""INSERT INTO applied_multipliers_log VALUES
                   (1, '2026-01-01 00:00:01+00', 'BTC', 'global', NULL, 1.0, 'a', 'x'),
                   (2, '2026-01-01 00:00:01+00', 'BTC', 'weekly', NULL, 1.0, 'a', 'x'),
                   (3, '2026-01-02 00:00:01+00', 'BTC', 'global', 1.0, 1.1, 'b', 'x')""")
    assert migrate(con) == list(range(4, SCHEMA_VERSION + 1))
    rows = con.execute("SELECT run_id, seq, applied_seq FROM calibration_runs ORDER BY run_id").fetchall()
    con.close()
    assert rows == [("a", 1, 1), ("b", 2, 3), ("c", 3, None)]


def test_newest_is_commit_order_not_wall_time(markets: dict[str, Path], db_path: Path) -> None:
    """A run committed last is the one Force-Apply applies, even with an older created_at."""
    from calib.live import record_live_run, run_calibration_extended
    from tests.test_live_policy import _live_config

    early = run_calibration_extended(_live_config(markets["m090"]))  # created first ...
    late = run_calibration_extended(_live_config(markets["m120"]))
    skip = PolicyConfig(min_samples=10**9)
    record_live_run(db_path, late, skip)
    record_live_run(db_path, early, skip)  # ... committed last: the newest
    assert force_apply_latest(db_path, "BTC").run_id == early.run_id
    assert _breaks(db_path)["invariant"] == 0
    out = subprocess.run([sys.executable, str(ROOT / "cli.py"), "history", "--db", str(db_path), "--source", "live",
                          "--limit", "1", "--json"], capture_output=True, text=True, env=_env(), timeout=60)
    assert json.loads(out.stdout)[0]["run_id"] == early.run_id

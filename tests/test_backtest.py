"""Walk-forward backtest: bootstrap intervals, policy replay, engines, tables, CLI, app section.

One small drift harvest (3-hour snapshots, 60 instruments) serves every test
that calibrates; the bootstrap's coverage is checked on sufficient statistics
of generated quotes where the true multiplier is known exactly.
"""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import numpy as np
import pytest
from typer.testing import CliRunner

from calib.backtest import BacktestConfig, parse_duration, run_backtest
from calib.backtest.replay import initial_state, replay_policy
from calib.config import CalibrationConfig, HarvestConfig, PolicyConfig, RealismThresholds
from calib.data.demo import DemoSpec, generate_demo_harvest, true_multiplier
from calib.engine.bootstrap import multiplier_interval, resampling_units
from calib.engine.fit import fit_multiplier
from calib.engine.model import FitInputs
from calib.errors import InvalidInputError
from calib.live import record_live_run
from calib.store.applied import write_applied
from calib.store.backtests import newest_backtest, record_backtest
from calib.store.connection import connect

END = datetime(2026, 11, 20, tzinfo=UTC)
DAYS = 12.0
FIRST = END - timedelta(days=DAYS)
ANCHORS = np.array([-2.0, -1.0, -0.5, 0.0, 0.5, 1.0, 2.0])
RATIOS = np.array([1.30, 1.10, 1.03, 1.0, 1.01, 1.06, 1.20])


@pytest.fixture(scope="module")
def drift_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("drift")
    generate_demo_harvest(root, DemoSpec(underlyings=("BTC",), end=END, days=DAYS, step_minutes=180,
                                         scenario="drift", max_instruments=60))
    return root


def _config(root: Path, *, start_days: float = 8, end_days: float = 11, step: str = "1d",
            policy: PolicyConfig | None = None) -> BacktestConfig:
    # The drift demo is kept small for speed (~120 quotes per 3-day window): below the 200-quote default.
    cal = CalibrationConfig(underlying="BTC", source="harvested", lookback_days=3,
                            harvest=HarvestConfig(data_root=root), realism=RealismThresholds(min_samples=100))
    return BacktestConfig(calibration=cal, start=FIRST + timedelta(days=start_days),
                          end=FIRST + timedelta(days=end_days), step=parse_duration(step, name="--step"),
                          policy=policy or PolicyConfig())


# --------------------------------------------------------------------------- bootstrap interval


def _market(rng: np.random.Generator, m_true: float, n_snap: int = 30, n_exp: int = 8, per_cell: int = 12
            ) -> tuple[FitInputs, np.ndarray, np.ndarray]:
    """Quotes with IV = m RV skew(z) (1 + snapshot noise + expiry noise + quote noise)."""
    s = np.repeat(np.arange(n_snap), n_exp * per_cell)
    e = np.tile(np.repeat(np.arange(n_exp), per_cell), n_snap)
    n = s.size
    rv = 0.5 * np.exp(0.1 * rng.standard_normal(n_snap))[s]
    z1 = rng.uniform(-2.5, 2.5, n) * m_true
    noise = 1 + 0.01 * rng.standard_normal(n_snap)[s] + 0.015 * rng.standard_normal(n_exp)[e] \
        + 0.01 * rng.standard_normal(n)
    iv = m_true * rv * np.interp(z1 / m_true, ANCHORS, RATIOS) * noise
    g = FitInputs(z1=z1, rv=rv, iv=iv, vega_coin=rng.uniform(0.2, 1.0, n))
    t_years = (e + 3.0) / 365.0 - s / 8.0 / 365.0  # expiry e at day e + 3, snapshots 3 h apart
    snap_us = s.astype(np.int64) * 3 * 3_600_000_000
    return g, snap_us, t_years


def test_interval_covers_the_true_multiplier_about_90pct_and_is_deterministic() -> None:
    rng = np.random.default_rng(5)
    hits, widths = 0, []
    reps = 120
    for _ in range(reps):
        g, snap_us, t_years = _market(rng, 1.15)
        m = fit_multiplier(g, anchors_z=ANCHORS, ratios=RATIOS, bounds=(0.25, 4.0)).multiplier
        units = resampling_units(snap_us, t_years)
        lo, hi = multiplier_interval(g, units, anchors_z=ANCHORS, ratios=RATIOS, multiplier=m, n_resamples=400)
        assert lo is not None and hi is not None and m is not None
        assert lo < m < hi
        hits += lo <= 1.15 <= hi
        widths.append(hi - lo)
    assert 0.80 <= hits / reps <= 0.99, hits
    # Same inputs, same interval (seeded); a different seed moves it a little, not much.
    args = dict(anchors_z=ANCHORS, ratios=RATIOS, multiplier=m)
    assert multiplier_interval(g, units, **args) == multiplier_interval(g, units, **args)
    other = multiplier_interval(g, units, seed=99, **args)
    assert other != multiplier_interval(g, units, **args)
    assert abs(other[0] - lo) < 0.25 * (hi - lo)  # type: ignore[operator]


def test_resampling_snapshots_alone_is_too_narrow_for_persistent_expiry_offsets() -> None:
    """Why expiries are resampled too: with one unit per snapshot the interval misses the truth."""
    rng = np.random.default_rng(6)
    hits_two_way = hits_snap = 0
    for _ in range(60):
        g, snap_us, t_years = _market(rng, 1.15)
        m = fit_multiplier(g, anchors_z=ANCHORS, ratios=RATIOS, bounds=(0.25, 4.0)).multiplier
        snaps, expiries = resampling_units(snap_us, t_years)
        assert expiries.max() + 1 == 8 and snaps.max() + 1 == 30
        two = multiplier_interval(g, (snaps, expiries), anchors_z=ANCHORS, ratios=RATIOS, multiplier=m,
                                  n_resamples=300)
        one = multiplier_interval(g, (snaps, np.zeros_like(expiries)), anchors_z=ANCHORS, ratios=RATIOS,
                                  multiplier=m, n_resamples=300)
        hits_two_way += two[0] <= 1.15 <= two[1]  # type: ignore[operator]
        hits_snap += one[0] <= 1.15 <= one[1]  # type: ignore[operator]
    assert hits_snap < 0.7 * 60 < hits_two_way


def test_interval_is_none_without_a_multiplier_and_one_unit() -> None:
    g, snap_us, t_years = _market(np.random.default_rng(1), 1.0, n_snap=1, n_exp=1)
    units = resampling_units(snap_us, t_years)
    assert multiplier_interval(g, units, anchors_z=ANCHORS, ratios=RATIOS, multiplier=None) == (None, None)
    assert multiplier_interval(g, units, anchors_z=ANCHORS, ratios=RATIOS, multiplier=1.0) == (None, None)


def test_calibration_json_carries_the_interval_globally_and_per_band(drift_root: Path) -> None:
    from calib.calibration import run_historical_calibration_from_harvest

    cfg = CalibrationConfig(underlying="BTC", source="harvested", lookback_days=3,
                            harvest=HarvestConfig(data_root=drift_root, end_time=FIRST + timedelta(days=10)))
    d = run_historical_calibration_from_harvest(cfg).to_dict()
    gm = d["global_metrics"]
    assert gm["ci_low"] < gm["recommended_iv_multiplier"] < gm["ci_high"]
    assert gm["ci_high"] - gm["ci_low"] < 0.2
    fitted = [b for b in d["bands"] if b["recommended_iv_multiplier"] is not None]
    assert fitted and all(b["ci_low"] <= b["recommended_iv_multiplier"] <= b["ci_high"] for b in fitted)
    again = run_historical_calibration_from_harvest(cfg).to_dict()["global_metrics"]
    assert (again["ci_low"], again["ci_high"]) == (gm["ci_low"], gm["ci_high"])


# --------------------------------------------------------------------------- policy replay


def test_replay_applies_exactly_what_the_live_store_would(drift_root: Path, tmp_path: Path) -> None:
    """The replayed applied multipliers equal those of feeding the same runs to `record_live_run` in order.

    The first as-of time precedes the harvest (a failed run: never applied, EWMA kept).
    """
    policy = PolicyConfig(cooldown_minutes=0, deadband=0.01, max_step=0.05)
    cfg = _config(drift_root, start_days=-1, end_days=11, step="1d", policy=policy)
    res = run_backtest(cfg, workers=1)
    assert res.steps[0]["status"] == "failed" and res.steps[0]["decision"] == "skipped"
    assert res.summary["n_failed"] >= 1 and res.summary["n_applied"] >= 3

    db = tmp_path / "live.duckdb"
    with connect(db, read_only=False) as con:
        bands = [b.name for b in cfg.calibration.bands]
        write_applied(con, "BTC", 1.0, dict.fromkeys(bands, 1.0), run_id="start", at=cfg.start - timedelta(days=1),
                      reason="start")
    live = []
    for step, result in zip(res.steps, res.results, strict=True):
        as_live = replace(result, source="live", created_at=step["as_of"])
        rec = record_live_run(db, as_live, policy)
        live.append((rec.outcome.decision, rec.outcome.smoothed_multiplier))
    assert [(s["decision"], s["smoothed_multiplier"]) for s in res.steps] == live
    with connect(db, read_only=True) as con:
        applied = con.execute("SELECT multiplier FROM applied_multipliers WHERE scope = 'global'").fetchone()
    assert applied is not None and applied[0] == res.steps[-1]["applied_multiplier"]
    # Replaying the same runs again from the same state gives the same decisions (pure function of its inputs).
    again = replay_policy([(s["as_of"], r) for s, r in zip(res.steps, res.results, strict=True)],
                          initial_state(1.0, bands), policy)
    assert [r.applied_multiplier for r in again] == [s["applied_multiplier"] for s in res.steps]


def test_policy_beats_static_on_a_drift_and_tracks_the_truth(drift_root: Path) -> None:
    """From day 10 the 3-day windows have a full 7-day RV warm-up inside the harvest, as the generator's RV."""
    res = run_backtest(_config(drift_root, start_days=10, end_days=11.75, step="6h"), workers=1)
    s = res.summary
    assert s["n_scored"] == s["n_steps"] == 7 and s["n_failed"] == 0
    assert s["mean_oos_vmae_pct_policy"] < s["mean_oos_vmae_pct_static"]
    assert s["mean_oos_vmae_pct_best"] <= s["mean_oos_vmae_pct_policy"]
    assert s["improvement_pct"] > 20
    as_of_ms = np.array([r["as_of"].timestamp() * 1e3 for r in res.steps])
    # A window estimates the multiplier at its middle: 1.5 days before the as-of time.
    mid = true_multiplier("drift", as_of_ms - 1.5 * 86_400e3, FIRST.timestamp() * 1e3, END.timestamp() * 1e3)
    rec = np.array([r["recommended_iv_multiplier"] for r in res.steps])
    assert np.abs(rec - mid).max() < 0.03
    applied = np.array([r["applied_multiplier"] for r in res.steps])
    assert (np.diff(applied) >= 0).all() and applied[-1] > 1.1  # follows the rising truth, lagging it
    truth = true_multiplier("drift", as_of_ms, FIRST.timestamp() * 1e3, END.timestamp() * 1e3)
    assert (applied < truth).all()


# --------------------------------------------------------------------------- engines


def test_local_pool_and_dask_local_cluster_give_the_same_rows(drift_root: Path) -> None:
    cfg = _config(drift_root, start_days=9, end_days=11, step="1d")
    pool = run_backtest(cfg, workers=2)
    dask = run_backtest(cfg, cluster="local", workers=1, local_processes=False)
    assert pool.engine == "process-pool" and dask.engine == "dask-local"
    assert pool.steps == dask.steps and len(pool.steps) == 2


def test_an_existing_scheduler_by_address_gives_the_same_rows(drift_root: Path) -> None:
    from dask.distributed import LocalCluster

    cfg = _config(drift_root, start_days=10, end_days=11, step="12h")
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False, protocol="tcp", dashboard_address=None,
                      host="127.0.0.1") as cluster:
        address = cluster.scheduler_address
        assert address.startswith("tcp://")
        remote = run_backtest(cfg, cluster=address)
    assert remote.engine == f"dask {address}" and remote.workers == 1
    assert remote.steps == run_backtest(cfg, workers=1).steps


def test_bad_cluster_and_config_are_one_clear_error(drift_root: Path) -> None:
    with pytest.raises(InvalidInputError, match="`--cluster` must be 'local' or a scheduler address"):
        run_backtest(_config(drift_root), cluster="udp://nowhere", workers=2)
    with pytest.raises(InvalidInputError, match="must be after `--start`"):
        _config(drift_root, start_days=5, end_days=5)
    with pytest.raises(InvalidInputError, match="`--step` must be a positive duration"):
        parse_duration("tomorrow", name="--step")


# --------------------------------------------------------------------------- tables and CLI


def test_cli_json_contract_tables_and_applied_untouched(drift_root: Path, tmp_path: Path) -> None:
    from cli import app

    db = tmp_path / "bt.duckdb"
    args = ["backtest", "--underlying", "BTC", "--data-dir", str(drift_root), "--start", "2026-11-17T00:00:00Z",
            "--end", "2026-11-19T00:00:00Z", "--step", "1d", "--lookback-days", "3", "--workers", "1",
            "--db", str(db)]
    res = CliRunner().invoke(app, [*args, "--json"])
    assert res.exit_code == 0, res.output
    d = json.loads(res.stdout)
    assert set(d) == {"steps", "summary"}
    step_keys = {"as_of", "status", "recommended_iv_multiplier", "ci_low", "ci_high", "applied_multiplier",
                 "decision", "oos_vmae_pct_policy", "oos_vmae_pct_static", "oos_vmae_pct_best", "n_samples"}
    assert all(step_keys <= set(s) for s in d["steps"]) and len(d["steps"]) == 2
    assert {"mean_oos_vmae_pct_policy", "mean_oos_vmae_pct_static", "mean_oos_vmae_pct_best", "improvement_pct",
            "n_steps", "n_failed", "n_applied"} <= set(d["summary"])
    assert "backtest" not in res.stderr  # no progress under --json

    text = CliRunner().invoke(app, args)
    assert text.exit_code == 0, text.output
    assert "[90% CI]" in text.stdout and "Out-of-sample vMAE %" in text.stdout
    assert "backtest calibrate 2/2 steps" in text.stderr and "ETA" in text.stderr

    newest = newest_backtest(db, "BTC")
    assert newest is not None
    info, steps = newest
    assert info["n_steps"] == 2 and steps.height == 2
    assert steps["applied_multiplier"].to_list() == [s["applied_multiplier"] for s in d["steps"]]
    with duckdb.connect(str(db), read_only=True) as con:
        assert con.execute("SELECT count(*) FROM backtests").fetchone() == (2,)
        assert con.execute("SELECT count(*) FROM applied_multipliers").fetchone() == (0,)
        assert con.execute("SELECT count(*) FROM calibration_runs").fetchone() == (0,)
    assert newest_backtest(db, "ETH") is None


def test_cli_usage_errors(drift_root: Path, tmp_path: Path) -> None:
    from cli import app

    base = ["backtest", "-u", "BTC", "--data-dir", str(drift_root), "--db", str(tmp_path / "x.duckdb")]
    res = CliRunner().invoke(app, [*base, "--start", "2026-11-19T00:00:00Z", "--end", "2026-11-18T00:00:00Z"])
    assert res.exit_code == 2 and "must be after `--start`" in res.stderr
    res = CliRunner().invoke(app, [*base, "--start", "2026-11-18T00:00:00Z", "--end", "2026-11-19T00:00:00Z",
                                   "--step", "soon"])
    assert res.exit_code == 2 and "`--step` must be a positive duration" in res.stderr
    res = CliRunner().invoke(app, [*base, "--start", "yesterday", "--end", "2026-11-19T00:00:00Z"])
    assert res.exit_code == 2 and "`--start` must be an ISO-8601 time" in res.stderr
    res = CliRunner().invoke(app, [*base, "--start", "2026-11-14T00:00:00Z", "--end", "2026-11-19T00:00:00Z",
                                   "--step", "1m"])
    assert res.exit_code == 2 and "7200 steps exceed the maximum of 5000" in res.stderr


def test_record_backtest_round_trip_keeps_every_step(drift_root: Path, tmp_path: Path) -> None:
    res = run_backtest(_config(drift_root, start_days=10, end_days=11), workers=1)
    db = tmp_path / "rt.duckdb"
    record_backtest(db, res)
    newest = newest_backtest(db, "BTC")
    assert newest is not None
    info, steps = newest
    assert info["backtest_id"] == res.backtest_id and info["engine"] == "serial"
    row = steps.row(0, named=True)
    for key in ("recommended_iv_multiplier", "ci_low", "ci_high", "oos_vmae_pct_policy", "decision", "n_samples"):
        assert row[key] == res.steps[0][key]


# --------------------------------------------------------------------------- app section


def test_app_backtest_section_shows_the_newest_backtest(drift_root: Path, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    from streamlit.testing.v1 import AppTest

    from calib.store.history import record_run

    db = tmp_path / "app.duckdb"
    res = run_backtest(_config(drift_root, start_days=10, end_days=11), workers=1)
    record_run(db, res.results[0])  # one auto-calibration: the page is past its empty state
    monkeypatch.setenv("CALIB_DB", str(db))
    at = AppTest.from_file(str(Path(__file__).resolve().parents[1] / "app.py"), default_timeout=30)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert [h.value for h in at.header][-1] == "Backtest"
    assert "No backtest for BTC yet" in " ".join(str(i.value) for i in at.info)

    record_backtest(db, res)
    at.session_state["refresh"] = 1  # past the 30 s cache
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    metrics = {m.label: m.value for m in at.metric}
    pol = res.summary["mean_oos_vmae_pct_policy"]
    assert metrics["OOS vMAE policy"] == f"{pol:.2f} %"
    assert metrics["Steps / applied / failed"] == f"1 / {res.summary['n_applied']} / 0"
    assert any(res.backtest_id in str(c.value) for c in at.caption)


def test_history_chart_draws_the_interval_as_an_error_bar(drift_root: Path, tmp_path: Path) -> None:
    from calib import queries
    from calib.store.history import record_run
    from calib.ui.charts import history_chart

    db = tmp_path / "hist.duckdb"
    res = run_backtest(_config(drift_root, start_days=9, end_days=11), workers=1)
    for r in res.results:
        record_run(db, r)
    runs = queries.dashboard_data(db, "BTC").auto_history
    assert runs["ci_low"].to_list()[::-1] == [s["ci_low"] for s in res.steps]
    spec = history_chart(runs, "Multiplier", title="m").to_dict()
    rules = [layer for layer in spec["layer"] if (layer.get("mark") or {}).get("type") == "rule"]
    assert rules and rules[0]["encoding"]["y2"]["field"] == "bar_hi"
    assert not any((layer.get("mark") or {}).get("type") == "rule"
                   for layer in history_chart(runs, "vMAE %", title="v").to_dict()["layer"])

"""Live runs, the update policy and the one source of truth for applied multipliers."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule
from typer.testing import CliRunner

from calib.calibration import run_historical_calibration_from_harvest
from calib.config import (
    CalibrationConfig,
    HarvestConfig,
    PolicyConfig,
    RealismThresholds,
    SkewConfig,
)
from calib.errors import CalibError
from calib.live import calibrate_live_and_record, force_apply_latest
from calib.policy import PolicyState, decide
from calib.queries import applied_state, list_runs, run_sql
from calib.store.history import record_run
from cli import app
from tests.synth import END, exact_market

runner = CliRunner()
FLAT = SkewConfig(anchors_z=(-2.0, -1.0, 0.0, 1.0, 2.0), current_ratios=(1.0,) * 5)
LOOSE = PolicyConfig(min_samples=10, cooldown_minutes=0, deadband=0.0, max_step=1.0, ewma_alpha=1.0)


def _live_config(root: Path) -> CalibrationConfig:
    # The replayed test chains are small and old: thin bands and stale chains are tested in test_issue12_guards.
    return CalibrationConfig(underlying="BTC", source="live", min_dte=0.0, max_dte=10.0, replay=True, skew=FLAT,
                             harvest=HarvestConfig(data_root=root),
                             realism=RealismThresholds(min_band_samples=10, max_chain_age_minutes=1e9))


def _state_global(db: Path) -> float | None:
    return applied_state(db, "BTC").global_multiplier


def _newest_applied_smoothed(db: Path) -> float | None:
    df = run_sql(db, "SELECT smoothed_multiplier FROM calibration_runs WHERE source = 'live' AND applied "
                     "ORDER BY applied_at DESC LIMIT 1")
    return df["smoothed_multiplier"][0] if df.height else None


@pytest.fixture(scope="module")
def markets(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("markets")
    out = {}
    for name, m in (("m120", 1.2), ("m090", 0.9), ("bound", 5.0)):
        exact_market(base / name, m_by_dte=((0, 1000, m),), days=9)
        out[name] = base / name
    return out


def test_policy_applies_and_state_matches(markets: dict[str, Path], db_path: Path) -> None:
    rec = calibrate_live_and_record(_live_config(markets["m120"]), db_path, LOOSE)
    assert rec.outcome.decision == "applied", rec.outcome.reason
    assert rec.outcome.smoothed_multiplier == pytest.approx(1.2, abs=1e-6)
    st_ = applied_state(db_path, "BTC")
    assert st_.global_multiplier == rec.outcome.smoothed_multiplier
    assert st_.run_id == rec.result.run_id
    assert set(st_.bands) == {"weekly", "monthly", "quarterly"}
    # The next live run is tested at the applied multiplier.
    rec2 = calibrate_live_and_record(_live_config(markets["m120"]), db_path, replace(LOOSE, deadband=0.01))
    assert rec2.result.global_metrics.multiplier_tested == pytest.approx(1.2, abs=1e-6)
    assert rec2.outcome.decision == "skipped"
    assert rec2.outcome.reason.startswith("Within deadband")


def test_acceptance_ui_view_force_apply_and_auto_untouched(markets: dict[str, Path], db_path: Path,
                                                            tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Seed's bug: 'Applied' run with smoothed X while Current Applied showed 1.0000. Impossible here."""
    cfg = tmp_path / "calib.toml"
    cfg.write_text("[policy]\nmin_samples = 10\ncooldown_minutes = 600\nmax_step = 0.05\newma_alpha = 0.5\n")
    monkeypatch.setenv("CALIB_CONFIG", str(cfg))
    live = ["calibrate-live", "--underlying", "BTC", "--replay", str(markets["m120"]), "--db", str(db_path),
            "--dte-min", "0", "--json"]
    first = runner.invoke(app, live)
    assert first.exit_code == 0, first.output
    d1 = json.loads(first.stdout)
    assert d1["policy"]["decision"] == "applied"
    x1 = d1["policy"]["smoothed_multiplier"]
    assert x1 == pytest.approx(1.05)  # max_step 0.05 from the implicit 1.0
    # Read the state the way the UI does: latest live run + current applied multipliers.
    latest = list_runs(db_path, underlying="BTC", source="live", limit=1).row(0, named=True)
    assert latest["applied"] is True
    assert latest["smoothed_multiplier"] == x1
    assert applied_state(db_path, "BTC").global_multiplier == x1
    # Second run: in cooldown -> skipped, smoothed moves on; Force-Apply applies it.
    second = json.loads(runner.invoke(app, live).stdout)
    assert second["policy"]["decision"] == "skipped"
    assert second["policy"]["reason"].startswith("Cooldown until")
    x2 = second["policy"]["smoothed_multiplier"]
    forced = runner.invoke(app, ["apply", "--force", "--underlying", "BTC", "--db", str(db_path)])
    assert forced.exit_code == 0, forced.output
    assert "Forced by user" in forced.stdout
    state = json.loads(runner.invoke(app, ["state", "--underlying", "BTC", "--db", str(db_path), "--json"]).stdout)
    assert state["global_multiplier"] == x2
    assert state["run_id"] == second["run_id"]
    latest = list_runs(db_path, underlying="BTC", source="live", limit=1).row(0, named=True)
    assert (latest["smoothed_multiplier"], latest["applied"], latest["policy_reason"]) == (x2, True, "Forced by user")
    # Auto-calibrate afterwards leaves the applied state untouched.
    before = run_sql(db_path, "SELECT * FROM applied_multipliers ORDER BY scope").to_dicts()
    auto = runner.invoke(app, ["auto-calibrate", "--underlying", "BTC", "--data-dir", str(markets["m090"]),
                               "--db", str(db_path), "--as-of", END.isoformat(), "--lookback-days", "2",
                               "--dte-min", "0"])
    assert auto.exit_code == 0, auto.output
    assert run_sql(db_path, "SELECT * FROM applied_multipliers ORDER BY scope").to_dicts() == before


def test_force_apply_refuses_failed_run(markets: dict[str, Path], db_path: Path) -> None:
    rec = calibrate_live_and_record(_live_config(markets["bound"]), db_path, LOOSE)
    assert rec.result.status == "failed"
    assert rec.outcome.decision == "skipped"
    res = runner.invoke(app, ["apply", "--force", "--underlying", "BTC", "--db", str(db_path)])
    assert res.exit_code == 2
    assert "status is failed" in res.output
    assert _state_global(db_path) is None


def test_force_apply_without_live_run(db_path: Path, exact_harvest: Path) -> None:
    r = run_historical_calibration_from_harvest(CalibrationConfig(
        underlying="BTC", min_dte=0, lookback_days=2, harvest=HarvestConfig(data_root=exact_harvest, end_time=END)))
    record_run(db_path, r)
    res = runner.invoke(app, ["apply", "--force", "--underlying", "BTC", "--db", str(db_path)])
    assert res.exit_code == 1
    assert "no live run" in res.output


def _result_stub(markets: dict[str, Path]):  # type: ignore[no-untyped-def]
    from calib.live import run_calibration_extended

    return run_calibration_extended(_live_config(markets["m120"]))


def test_policy_rules_order(markets: dict[str, Path]) -> None:
    res = _result_stub(markets)
    now = datetime(2026, 3, 1, tzinfo=UTC)
    empty = PolicyState(applied_global=None, applied_bands={}, last_applied_at=None, prev_ewma=None,
                        prev_ewma_bands={})
    cfg = PolicyConfig(min_samples=10, max_step=0.1, ewma_alpha=0.5)
    first = decide(res, empty, cfg, now)
    assert first.decision == "applied"
    assert first.smoothed_multiplier == pytest.approx(1.1)  # 1.0 + max_step toward 1.2
    applied = replace(empty, applied_global=1.1, last_applied_at=now - timedelta(minutes=5), prev_ewma=1.2)
    assert decide(res, applied, cfg, now).reason.startswith("Cooldown until")
    assert decide(res, applied, replace(cfg, min_samples=10**6), now).reason.startswith("Too few samples")
    assert decide(res, applied, replace(cfg, max_vega_mae_pct=-1.0), now).reason.startswith("vMAE")
    near = replace(applied, applied_global=1.2, applied_bands={"weekly": 1.2, "monthly": 1.2, "quarterly": 1.2})
    assert decide(res, near, replace(cfg, cooldown_minutes=0), now).reason.startswith("Within deadband")
    clamped = decide(res, empty, replace(cfg, max_multiplier=1.05, max_step=1.0), now)
    assert clamped.smoothed_multiplier == pytest.approx(1.05)


class AppliedStateMachine(RuleBasedStateMachine):
    """Random live runs, policy outcomes, force-applies and auto-calibrations keep the invariant."""

    def __init__(self) -> None:
        super().__init__()
        self.root: Path | None = None

    @initialize(data=st.data())
    def setup(self, data: st.DataObject) -> None:
        import tempfile

        self.root = Path(tempfile.mkdtemp(prefix="calib-sm-"))
        self.db = self.root / "h.duckdb"
        self.markets = MARKETS

    def teardown(self) -> None:
        if self.root is not None:
            shutil.rmtree(self.root, ignore_errors=True)

    @rule(market=st.sampled_from(["m120", "m090", "bound"]), deadband=st.sampled_from([0.0, 0.02, 0.5]),
          cooldown=st.sampled_from([0.0, 600.0]), max_step=st.sampled_from([0.05, 1.0]),
          alpha=st.sampled_from([0.3, 1.0]))
    def live_run(self, market: str, deadband: float, cooldown: float, max_step: float, alpha: float) -> None:
        pol = PolicyConfig(min_samples=10, deadband=deadband, cooldown_minutes=cooldown, max_step=max_step,
                           ewma_alpha=alpha)
        rec = calibrate_live_and_record(_live_config(self.markets[market]), self.db, pol)
        if rec.result.status == "failed":
            assert rec.outcome.decision == "skipped"
        if rec.outcome.apply:
            assert _state_global(self.db) == rec.outcome.smoothed_multiplier

    @rule()
    def force_apply(self) -> None:
        try:
            res = force_apply_latest(self.db, "BTC")
        except CalibError:
            return
        assert _state_global(self.db) == res.multiplier

    @rule(market=st.sampled_from(["m120", "bound"]))
    def auto_calibrate(self, market: str) -> None:
        before = run_sql(self.db, "SELECT * FROM applied_multipliers ORDER BY scope").to_dicts() \
            if self.db.exists() else []
        r = run_historical_calibration_from_harvest(CalibrationConfig(
            underlying="BTC", min_dte=0, lookback_days=2, skew=FLAT,
            harvest=HarvestConfig(data_root=self.markets[market], end_time=END)))
        record_run(self.db, r)
        assert run_sql(self.db, "SELECT * FROM applied_multipliers ORDER BY scope").to_dicts() == before

    @invariant()
    def one_source_of_truth(self) -> None:
        if self.root is None or not self.db.exists():
            return
        view = _state_global(self.db)
        assert _newest_applied_smoothed(self.db) == view
        cli = runner.invoke(app, ["state", "--underlying", "BTC", "--db", str(self.db), "--json"])
        assert json.loads(cli.stdout)["global_multiplier"] == view


MARKETS: dict[str, Path] = {}


def test_applied_state_invariant(markets: dict[str, Path]) -> None:
    MARKETS.update(markets)
    machine = AppliedStateMachine.TestCase
    machine.settings = settings(max_examples=12, stateful_step_count=8, deadline=None,
                                suppress_health_check=list(HealthCheck))
    machine().runTest()

"""Engine: recovery of known multipliers and skew on an exact-model market; result contract."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from calib.calibration import run_historical_calibration_from_harvest
from calib.config import CalibrationConfig, HarvestConfig, SkewConfig
from tests.synth import END, exact_market

FLAT = SkewConfig(anchors_z=(-2.0, -1.0, 0.0, 1.0, 2.0), current_ratios=(1.0, 1.0, 1.0, 1.0, 1.0))


def _config(root: Path, **kw: object) -> CalibrationConfig:
    base = dict(underlying="BTC", min_dte=0.0, max_dte=10.0, lookback_days=2.0, skew=FLAT,
                harvest=HarvestConfig(data_root=root, end_time=END))
    base.update(kw)
    return CalibrationConfig(**base)  # type: ignore[arg-type]


def test_recovers_known_multiplier(exact_harvest: Path) -> None:
    r = run_historical_calibration_from_harvest(_config(exact_harvest))
    gm = r.global_metrics
    assert gm.recommended_iv_multiplier == pytest.approx(1.2, abs=1e-6)
    assert gm.at_recommended.mae_pct == pytest.approx(0.0, abs=1e-6)
    assert gm.at_recommended.vega_weighted_mae_pct == pytest.approx(0.0, abs=1e-6)
    assert gm.tested.bias_pct < 0  # tested at 1.0 < 1.2: model prices too low
    assert r.status == "ok", r.reason
    assert r.data_quality.coverage_pct == pytest.approx(100.0)


def test_recovers_band_multipliers_and_skew(tmp_path: Path) -> None:
    root = tmp_path / "h"
    ratios = (1.4, 1.15, 1.0, 1.05, 1.2)
    exact_market(root, m_by_dte=((0, 10, 1.1), (10, 45, 1.3), (45, 1000, 0.9)), ratios=ratios)
    skew = SkewConfig(anchors_z=FLAT.anchors_z, current_ratios=ratios)
    # The global range (the skew's fitting set) is the weekly band: one multiplier there.
    r = run_historical_calibration_from_harvest(_config(root, skew=skew))
    by_name = {b.name: b for b in r.bands}
    assert by_name["weekly"].recommended_iv_multiplier == pytest.approx(1.1, abs=1e-6)
    assert by_name["monthly"].recommended_iv_multiplier == pytest.approx(1.3, abs=1e-6)
    assert by_name["quarterly"].recommended_iv_multiplier == pytest.approx(0.9, abs=1e-6)
    assert by_name["monthly"].metrics.mae_pct == pytest.approx(0.0, abs=1e-5)
    # Skew fit with the flat current curve finds the market's ratios.
    flat = run_historical_calibration_from_harvest(_config(root))
    assert flat.global_metrics.recommended_iv_multiplier == pytest.approx(1.1, abs=1e-6)
    assert flat.global_metrics.at_recommended.mae_pct == pytest.approx(0.0, abs=1e-5)
    assert flat.skew is not None
    assert np.allclose(flat.skew.recommended, ratios, atol=0.02)
    assert flat.skew.largest_diff_anchor == -2.0
    assert flat.skew.max_abs_diff == pytest.approx(0.4, abs=0.02)


def test_result_json_has_contract_keys_and_no_nan(exact_harvest: Path) -> None:
    d = run_historical_calibration_from_harvest(_config(exact_harvest)).to_dict()
    text = json.dumps(d, allow_nan=False)
    assert "NaN" not in text
    for key in ("run_id", "created_at", "source", "underlying", "status", "reason", "applied", "dte_min",
                "dte_max", "lookback_days", "n_samples", "n_snapshots", "global_metrics", "bands",
                "option_type_metrics", "skew", "recommended_surface", "data_quality"):
        assert key in d
    for key in ("multiplier_tested", "recommended_iv_multiplier", "at_bound", "mae_pct", "mae_vol_points",
                "vega_weighted_mae_pct", "bias_pct", "tested", "rv_7d_pct", "atm_iv_pct"):
        assert key in d["global_metrics"]
    assert set(d["skew"]) >= {"anchors", "current", "recommended", "misfit", "max_abs_diff", "largest_diff_anchor"}
    assert set(d["data_quality"]) >= {"status", "issues", "rows_scanned", "rows_used", "excluded", "coverage_pct"}
    assert [b["name"] for b in d["bands"]] == ["weekly", "monthly", "quarterly"]
    assert {o["option_type"] for o in d["option_type_metrics"]} == {"C", "P"}
    assert d["applied"] is False


def test_max_samples_is_deterministic(exact_harvest: Path) -> None:
    cfg = _config(exact_harvest, max_samples=500)
    a = run_historical_calibration_from_harvest(cfg)
    b = run_historical_calibration_from_harvest(cfg)
    assert a.n_samples <= 500
    assert a.data_quality.excluded["sampled_out"] > 0
    assert a.global_metrics.to_dict() == b.global_metrics.to_dict()


def test_quotes_without_an_rv_are_excluded(tmp_path: Path) -> None:
    """A window that starts with the harvest: the first 6 h of snapshots have no RV_7d yet (`no_rv`)."""
    root = tmp_path / "h"
    exact_market(root, days=3.0)  # hourly snapshots
    r = run_historical_calibration_from_harvest(_config(root, lookback_days=3.0))
    assert r.data_quality.excluded["no_rv"] > 0
    assert 0 < r.n_snapshots <= r.data_quality.snapshots_present - 6  # the first hours price nothing


def test_option_type_filter(exact_harvest: Path) -> None:
    r = run_historical_calibration_from_harvest(_config(exact_harvest, option_types=("P",)))
    assert [o.option_type for o in r.option_type_metrics] == ["P"]
    assert r.data_quality.excluded["option_type_not_selected"] > 0


def test_at_bound_fails(tmp_path: Path) -> None:
    root = tmp_path / "h"
    exact_market(root, m_by_dte=((0, 1000, 5.0),))
    r = run_historical_calibration_from_harvest(_config(root))
    assert r.global_metrics.at_bound is True
    assert r.global_metrics.recommended_iv_multiplier == pytest.approx(4.0)
    assert r.status == "failed"
    assert "bound" in r.reason


def test_live_and_harvested_share_the_engine(exact_harvest: Path) -> None:
    from calib.live import run_calibration_extended

    cfg = replace(_config(exact_harvest), source="live", replay=True)
    live = run_calibration_extended(cfg)
    assert live.source == "live"
    assert live.n_snapshots == 1
    assert live.global_metrics.recommended_iv_multiplier == pytest.approx(1.2, abs=1e-6)


def test_current_skew_multiplier_is_what_the_policy_applies(tmp_path: Path) -> None:
    from datetime import UTC, datetime

    from calib.config import PolicyConfig
    from calib.policy import PolicyState, decide

    root = tmp_path / "h"
    exact_market(root, m_by_dte=((0, 1000, 1.1),), ratios=(1.4, 1.15, 1.0, 1.05, 1.2))
    r = run_historical_calibration_from_harvest(_config(root))  # current skew FLAT, market skewed
    gm = r.global_metrics
    assert gm.recommended_iv_multiplier == pytest.approx(1.1, abs=1e-6)  # joint fit, with the market's skew
    # With the flat skew the engine actually runs, a higher multiplier fits the wings better.
    assert gm.recommended_iv_multiplier_current_skew > gm.recommended_iv_multiplier + 0.005
    state = PolicyState(applied_global=None, applied_bands={}, last_applied_at=None, prev_ewma=None,
                        prev_ewma_bands={})
    out = decide(r, state, PolicyConfig(min_samples=1, max_step=1.0, ewma_alpha=1.0), datetime.now(UTC))
    assert out.smoothed_multiplier == pytest.approx(gm.recommended_iv_multiplier_current_skew, abs=1e-9)
    for b in r.bands:
        if b.recommended_iv_multiplier_current_skew is not None:
            assert out.smoothed_bands[b.name] == pytest.approx(b.recommended_iv_multiplier_current_skew, abs=1e-9)


def test_max_snapshots_keeps_the_newest(exact_harvest: Path) -> None:
    cfg = _config(exact_harvest, harvest=HarvestConfig(data_root=exact_harvest, end_time=END, max_snapshots=5))
    r = run_historical_calibration_from_harvest(cfg)
    assert r.n_snapshots == 5
    assert r.data_quality.coverage_pct == pytest.approx(100.0)
    assert r.global_metrics.recommended_iv_multiplier == pytest.approx(1.2, abs=1e-6)


@pytest.mark.parametrize("m", [0.4, 0.9, 1.0, 1.37, 2.5])
def test_sorted_prefix_profile_matches_the_direct_solve(m: float) -> None:
    """The joint fit's O(anchors) profile equals the bincount sums' solve and a direct J, quote by quote."""
    from calib.engine.joint_fit import _Profile
    from calib.engine.model import ModelInputs, skew_ratio
    from calib.engine.skew import skew_sums, solve_from_sums

    rng = np.random.default_rng(11)
    anchors = np.array([-2.0, -1.0, -0.5, 0.0, 0.5, 1.0, 2.0])
    current = np.array([1.3, 1.1, 1.03, 1.0, 1.01, 1.06, 1.2])
    n = 5000
    z1 = np.concatenate([rng.normal(0.0, 1.6, n - 14), anchors * m, anchors * m * 3])  # on and beyond anchors
    rv = rng.uniform(0.3, 0.9, z1.size)
    iv = rv * 1.15 * np.interp(z1 / 1.15, anchors, current) * rng.lognormal(0.0, 0.05, z1.size)
    w = rng.uniform(0.0, 1.0, z1.size)
    ones = np.ones(z1.size)
    g = ModelInputs(x=z1, k_rel=ones, omega=ones, s=ones, z1=z1, rv=rv, iv=iv, mark_coin=ones, vega_coin=w)
    j, ratios = _Profile(g, anchors, current)(m)
    z = z1 / m
    diag, off, rhs, support, _ = skew_sums(z, iv / (rv * m), w, anchors)
    want, _ = solve_from_sums(diag, off, rhs, support, anchors, current)
    resid = rv * m * skew_ratio(z, anchors, want) - iv
    np.testing.assert_allclose(ratios, want, rtol=1e-10, atol=1e-12)
    assert j == pytest.approx(float(np.dot(w, resid * resid)), rel=1e-10)


@pytest.mark.parametrize(("n", "k", "p"), [(1000, 100, 0.3), (50, 100, 0.5), (300_000, 1000, 0.7), (10, 3, 0.0)])
def test_stride_positions_match_the_full_position_list(n: int, k: int, p: float) -> None:
    from calib.engine.calibrate import _stride_positions

    mask = np.random.default_rng(5).random(n) < p
    idx = np.flatnonzero(mask)
    want = idx[np.linspace(0, idx.size - 1, k).round().astype(np.int64)] if idx.size > k else idx
    np.testing.assert_array_equal(_stride_positions(mask, k, block=97), want)


@pytest.mark.parametrize("p", [0.0, 0.2, 1.0])
def test_newest_positions_are_the_masked_quotes_of_the_newest_masked_snapshot(p: float) -> None:
    from calib.engine.calibrate import _newest_positions

    rng = np.random.default_rng(8)
    snaps = rng.integers(0, 50, 5000) * 300_000_000
    mask = rng.random(5000) < p
    want = np.flatnonzero(mask & (snaps == snaps[mask].max())) if mask.any() else np.zeros(0, np.int64)
    np.testing.assert_array_equal(_newest_positions(snaps, mask), want)


def test_model_pricing_from_precomputed_inputs_equals_black76_on_the_raw_quotes() -> None:
    """`quote_errors` (precomputed z1, RV sqrt T, hinge skew, two CDFs) against the model written out plainly."""
    from calib.engine.metrics import quote_errors
    from calib.engine.model import QuoteArrays, model_inputs
    from calib.numerics.black76 import black76_price_coin, black76_vega_coin

    rng = np.random.default_rng(21)
    n = 20_000
    k_rel = np.exp(rng.normal(0.0, 0.4, n))
    t = rng.uniform(2 / 8760, 0.5, n)
    call = rng.random(n) < 0.5
    rv = rng.uniform(0.2, 1.2, n)
    iv = rv * rng.uniform(0.7, 1.6, n)
    mark = black76_price_coin(1.0, k_rel, t, iv, call) + 1e-4
    q = QuoteArrays.from_rows(k_rel=k_rel, t_years=t, is_call=call, mark_coin=mark, iv=iv, rv=rv,
                              snapshot_us=np.arange(n, dtype=np.int64))  # one RV per snapshot
    anchors = np.array([-2.0, -1.0, -0.5, 0.0, 0.5, 1.0, 2.0])
    ratios = np.array([1.4, 1.15, 1.05, 1.0, 0.98, 1.02, 1.1])
    m = 1.13
    z = np.log(k_rel) / (rv * m * np.sqrt(t))
    sigma = rv * m * np.interp(z, anchors, ratios)
    price = black76_price_coin(1.0, k_rel, t, sigma, call)
    err = quote_errors(q, m, anchors, ratios)
    np.testing.assert_allclose(err.sigma, sigma, rtol=1e-13)
    np.testing.assert_allclose(err.err_pct, (price - mark) / mark * 100.0, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(err.err_vol_points, (sigma - iv) * 100.0, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(model_inputs(q).vega_coin, black76_vega_coin(1.0, k_rel, t, iv), rtol=1e-12)

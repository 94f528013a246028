"""Static-arbitrage checks (calib.engine.arbitrage / expiries) and the error map, on surfaces with known answers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from calib.calibration import run_historical_calibration_from_harvest
from calib.config import Band, CalibrationConfig, HarvestConfig, SkewConfig
from calib.engine import arbitrage as arb
from calib.engine.expiries import ModelSurface, chain_view
from calib.engine.model import QuoteArrays
from calib.stages.result import arbitrage_grade
from tests.synth import END, exact_market

ANCHORS = np.array([-2.0, -1.0, 0.0, 1.0, 2.0])
SMILE = np.array([1.3, 1.1, 1.0, 1.1, 1.3])  # convex kinks only
KINK = np.array([1.3, 1.1, 1.0, 1.6, 1.3])  # concave kink at z = 1: the slope drops from +0.6 to -0.3 per z
BANDS = (Band(name="weekly", dte_min=0.0, dte_max=10.0), Band(name="monthly", dte_min=10.0, dte_max=45.0))
T_YEARS = np.array([2.0, 9.0, 11.0, 30.0]) / 365.0


def _grid(model: ModelSurface, t: np.ndarray = T_YEARS, n: int = 41) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Uniform ln(K/F) grid between the outer anchors, total variance there and at the next expiry."""
    s = model.rv * model.multiplier_at(t) * np.sqrt(t)
    x = (s * ANCHORS[0])[:, None] + (s * (ANCHORS[-1] - ANCHORS[0]))[:, None] * np.linspace(0, 1, n)[None, :]
    return x, model.total_variance(x, t), model.total_variance(x[:-1], t[1:])


def test_flat_and_convex_smiles_have_no_arbitrage() -> None:
    for ratios in (np.ones(5), SMILE):
        model = ModelSurface(rv=0.5, multiplier=1.1, anchors_z=ANCHORS, ratios=ratios)
        check = arb.check_grid(*_grid(model))
        assert check.checked_points == T_YEARS.size * 41
        assert (check.butterfly_violations, check.calendar_violations) == (0, 0)
        assert check.first is None and check.worst is None


def test_a_steep_concave_kink_breaks_convexity_at_the_kink() -> None:
    model = ModelSurface(rv=0.5, multiplier=1.1, anchors_z=ANCHORS, ratios=KINK)
    x, w, w_next = _grid(model)
    check = arb.check_grid(x, w, w_next)
    assert check.butterfly_violations >= T_YEARS.size  # at least once per expiry
    assert check.calendar_violations == 0
    assert check.first is not None and check.first.expiry_index == 0
    assert check.first.kind == "butterfly_convexity"
    # Every violation sits at the kink: z = 1 (within one grid step).
    conv, _ = arb.butterfly_sizes(x, w)
    rows, cols = np.nonzero(np.nan_to_num(conv, nan=-1.0) > arb.PRICE_TOL)
    z = x[rows, cols] / (0.5 * 1.1 * np.sqrt(T_YEARS[rows]))
    assert np.all(np.abs(z - 1.0) <= 0.11)
    # A gentle concave kink (slope +0.02 then -0.02 per z) is not tradeable between these strikes.
    gentle = ModelSurface(rv=0.5, multiplier=1.1, anchors_z=ANCHORS, ratios=np.array([1.3, 1.1, 1.0, 1.02, 1.0]))
    assert arb.check_grid(*_grid(gentle)).butterfly_violations == 0


def test_band_multipliers_that_lower_total_variance_are_calendar_arbitrage() -> None:
    # 9 d at m 1.3, 11 d at m 0.9: w(11 d) / w(9 d) = (11 / 9) (0.9 / 1.3)^2 = 0.59 < 1.
    falling = ModelSurface(rv=0.5, multiplier=1.0, anchors_z=ANCHORS, ratios=SMILE, bands=BANDS,
                           band_multipliers=(1.3, 0.9))
    check = arb.check_grid(*_grid(falling))
    assert check.calendar_violations == 41  # every strike of the 9 d -> 11 d pair, no other pair
    assert check.butterfly_violations == 0
    assert check.first is not None and check.first.kind == "calendar" and check.first.expiry_index == 1
    assert check.worst_calendar is not None and check.worst_calendar.size > 0
    # A mild step (1.05 -> 1.0) keeps total variance rising: 11/9 x (1/1.05)^2 = 1.11.
    mild = ModelSurface(rv=0.5, multiplier=1.0, anchors_z=ANCHORS, ratios=SMILE, bands=BANDS,
                        band_multipliers=(1.05, 1.0))
    assert arb.check_grid(*_grid(mild)).calendar_violations == 0


def test_violation_json_names_expiry_and_strike() -> None:
    falling = ModelSurface(rv=0.5, multiplier=1.0, anchors_z=ANCHORS, ratios=SMILE, bands=BANDS,
                           band_multipliers=(1.3, 0.9))
    as_of_us = int(END.timestamp() * 1e6)
    d = arb.check_dict(arb.check_grid(*_grid(falling)), T_YEARS, as_of_us)
    assert d["first"]["expiry"] == "2026-03-10 00:00Z" and d["first"]["next_expiry"] == "2026-03-12 00:00Z"
    assert d["first"]["dte_days"] == pytest.approx(9.0)
    assert d["first"]["strike_rel"] == pytest.approx(np.exp(-2.0 * 0.5 * 1.3 * np.sqrt(9 / 365)))
    text = arb.describe(d["first"])
    assert text.startswith("calendar arbitrage at expiry 2026-03-10 00:00Z (9.0 d), K/F 0.")


def _chain_quotes(iv_bump: float = 0.0) -> QuoteArrays:
    """One snapshot: two expiries x 21 strikes, calls and puts, marks on a convex smile (+ one bumped strike)."""
    t = np.repeat([7.0 / 365, 30.0 / 365], 21)
    k = np.exp(np.tile(np.linspace(-0.3, 0.3, 21), 2))
    z = np.log(k) / (0.5 * np.sqrt(t))
    iv = 0.5 * np.interp(z, ANCHORS, SMILE)
    iv[10 + 5] += iv_bump  # the 7 d expiry, 5 strikes above the money
    both = np.concatenate
    return QuoteArrays.from_rows(k_rel=both([k, k]), t_years=both([t, t]), is_call=both([np.ones(42, bool),
                                 np.zeros(42, bool)]), mark_coin=np.full(84, 0.01), iv=both([iv, iv]),
                                 rv=np.full(84, 0.5), snapshot_us=np.zeros(84, np.int64))


def test_chain_view_counts_crossed_marks_and_keeps_the_models_clean() -> None:
    current = ModelSurface(rv=0.5, multiplier=1.0, anchors_z=ANCHORS, ratios=SMILE)
    clean = chain_view(_chain_quotes(), current=current, recommended=current, as_of_us=0)
    assert clean["arbitrage"]["market"]["butterfly_violations"] == 0
    crossed = chain_view(_chain_quotes(iv_bump=0.15), current=current, recommended=current, as_of_us=0)
    a = crossed["arbitrage"]
    assert a["market"]["butterfly_violations"] >= 1
    assert a["market"]["first"]["expiry"] == "1970-01-08 00:00Z"
    assert (a["butterfly_violations"], a["calendar_violations"]) == (0, 0)  # the model is still clean
    assert (a["current"]["butterfly_violations"], a["current"]["calendar_violations"]) == (0, 0)
    exp = crossed["expiries"]
    assert [e["dte_days"] for e in exp] == pytest.approx([7.0, 30.0])
    assert len(exp[0]["strike_rel"]) == 21 and exp[0]["n_quotes"] == 42
    assert exp[1]["atm_market_iv_pct"] == pytest.approx(50.0, abs=1e-6)
    assert exp[1]["atm_recommended_iv_pct"] == pytest.approx(50.0, abs=1e-6)
    assert np.allclose(exp[1]["market_iv_pct"], exp[1]["recommended_iv_pct"], atol=1e-3)


def test_arbitrage_grade_caps_at_degraded_and_keeps_failed() -> None:
    first = {"kind": "butterfly_convexity", "expiry": "2026-03-10 08:00Z", "dte_days": 9.3, "strike_rel": 1.0712}
    a = {"butterfly_violations": 3, "calendar_violations": 0, "first": first}
    status, reason = arbitrage_grade("ok", "Calibration within thresholds", a)
    assert status == "degraded"
    assert reason.endswith("first: butterfly arbitrage at expiry 2026-03-10 08:00Z (9.3 d), K/F 1.0712")
    assert arbitrage_grade("failed", "Data quality failed (x)", a) == ("failed", "Data quality failed (x)")
    status, reason = arbitrage_grade("degraded", "Data quality degraded; use with caution", a)
    assert status == "degraded" and reason.startswith("Data quality degraded; use with caution; Recommended surface")
    assert arbitrage_grade("ok", "fine", {**a, "first": None, "butterfly_violations": 0}) == ("ok", "fine")


def _config(root: Path, **kw: object) -> CalibrationConfig:
    base = dict(underlying="BTC", min_dte=0.0, max_dte=10.0, lookback_days=2.0,
                harvest=HarvestConfig(data_root=root, end_time=END))
    base.update(kw)
    return CalibrationConfig(**base)  # type: ignore[arg-type]


def test_a_run_whose_recommended_skew_has_a_kink_is_degraded(tmp_path: Path) -> None:
    root = tmp_path / "h"
    exact_market(root, ratios=tuple(KINK), n_strikes=21)
    skew = SkewConfig(anchors_z=tuple(ANCHORS), current_ratios=tuple(KINK))
    r = run_historical_calibration_from_harvest(_config(root, skew=skew, fit_skew=False))
    d = r.to_dict()
    assert d["arbitrage"]["butterfly_violations"] > 0
    assert d["arbitrage"]["current"]["butterfly_violations"] > 0  # the current skew is the same curve
    assert r.status == "degraded"
    first = d["arbitrage"]["first"]
    assert f"first: butterfly arbitrage at expiry {first['expiry']}" in r.reason
    assert f"K/F {first['strike_rel']:.4f}" in r.reason


def test_a_clean_exact_market_is_ok_with_an_error_map(tmp_path: Path) -> None:
    root = tmp_path / "h"
    exact_market(root, m_by_dte=((0.0, 1000.0, 1.2),), ratios=tuple(SMILE))
    skew = SkewConfig(anchors_z=tuple(ANCHORS), current_ratios=tuple(SMILE))
    r = run_historical_calibration_from_harvest(_config(root, skew=skew))
    d = r.to_dict()
    assert r.status == "ok", r.reason
    a = d["arbitrage"]
    assert a["checked_points"] > 0 and (a["butterfly_violations"], a["calendar_violations"]) == (0, 0)
    assert (a["market"]["butterfly_violations"], a["market"]["calendar_violations"]) == (0, 0)
    assert [e["dte_days"] for e in d["expiries"]] == sorted(e["dte_days"] for e in d["expiries"])
    em = d["error_map"]
    assert em["dte_edges_days"] == [0.0, 10.0, 45.0, 180.0]
    assert em["z_edges"][0] is None and em["z_edges"][-1] is None and em["z_edges"][1:-1] == [-1.5, -0.5, 0.5, 1.5]
    counts = np.array(em["counts"])
    assert counts.shape == (3, 5)
    assert counts.sum() == sum(b["n_samples"] for b in d["bands"])  # every scored quote in one cell
    rec = np.array(em["mean_err_vol_points"], dtype=float)
    assert np.nanmax(np.abs(rec)) < 1e-4  # the exact model: no error anywhere
    tested = np.array(em["tested"]["mean_err_vol_points"], dtype=float)
    assert np.nanmax(tested) < 0  # tested at 1.0 against a market at 1.2: too low everywhere
    assert np.allclose(np.array(em["tested"]["mean_abs_err_vol_points"], dtype=float)[counts > 0],
                       -tested[counts > 0])

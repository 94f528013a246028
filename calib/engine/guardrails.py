"""Realism guardrails (SPEC section 4): an absurd calibration fails loudly."""

from __future__ import annotations

import math

from calib._typing import Status
from calib.config import RealismThresholds


def assess_calibration_realism(
    multiplier: float | None,
    mae_pct: float | None,
    vega_weighted_mae_pct: float | None,
    data_quality_status: str,
    *,
    at_bound: bool = False,
    data_quality_issues: list[str] | None = None,
    thresholds: RealismThresholds | None = None,
) -> tuple[Status, str]:
    """Grade a calibration `ok` / `degraded` / `failed` with a reason.

    Rules, in order: data quality failed -> failed; multiplier outside
    [min_mult, max_mult], at a search bound, MAE or vMAE above its maximum
    (None skips that test) -> failed naming every tripped check with values;
    data quality degraded -> degraded; else ok.
    """
    th = thresholds or RealismThresholds()
    if data_quality_status == "failed":
        named = ", ".join(data_quality_issues) if data_quality_issues else "see data_quality.issues"
        return "failed", f"Data quality failed ({named})"
    tripped: list[str] = []
    if multiplier is None or (isinstance(multiplier, float) and math.isnan(multiplier)):
        tripped.append("no multiplier could be fitted")
    else:
        if multiplier < th.min_mult:
            tripped.append(f"multiplier {multiplier:.4f} < {th.min_mult:g}")
        if multiplier > th.max_mult:
            tripped.append(f"multiplier {multiplier:.4f} > {th.max_mult:g}")
    if at_bound:
        tripped.append("multiplier pinned at a search bound")
    if th.max_mae_pct is not None and mae_pct is not None and mae_pct > th.max_mae_pct:
        tripped.append(f"MAE {mae_pct:.1f}% > {th.max_mae_pct:g}%")
    if th.max_vega_mae_pct is not None and vega_weighted_mae_pct is not None and vega_weighted_mae_pct > th.max_vega_mae_pct:
        tripped.append(f"vMAE {vega_weighted_mae_pct:.1f}% > {th.max_vega_mae_pct:g}%")
    if tripped:
        return "failed", "Unrealistic auto-calibration: " + "; ".join(tripped)
    if data_quality_status == "degraded":
        return "degraded", "Data quality degraded; use with caution"
    return "ok", "Calibration within thresholds"

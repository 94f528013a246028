"""The text summary of a calibration run (`CalibrationResult.summary()`), what the CLI prints without --json.

It formats the result's `to_dict()` so the text and the JSON cannot disagree; plain
strings, no terminal or framework imports, so the engine layer can hold it.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from os import PathLike
from typing import Any


def _fmt(v: Any, spec: str = ".2f", suffix: str = "") -> str:
    return "-" if v is None else f"{v:{spec}}{suffix}"


def status_line(status: str, reason: str) -> str:
    return f"Status: {status.upper()} - {reason}"


def warning_block(d: Mapping[str, Any]) -> str:
    bar = "=" * 78
    return "\n".join([
        bar,
        f"WARNING: {d['source'].upper()} CALIBRATION FAILED for {d['underlying']} (run {d['run_id']})",
        d["reason"],
        "Recorded for debugging only: it is never applied and never updates the vol surface.",
        bar,
    ])


def _ci(m: Mapping[str, Any]) -> str:
    """`` [1.1012-1.1240]``: the 90 % bootstrap interval of a recommended multiplier ('' when there is none)."""
    lo, hi = m.get("ci_low"), m.get("ci_high")
    return "" if lo is None or hi is None else f" [{lo:.4f}-{hi:.4f}]"


_BAND_GUARD = {"ok": "ok", "too_few_samples": "too few samples: not applied", "failed": "FAILED"}


def _age(created: datetime, data_time: datetime) -> str:
    minutes = (created - data_time).total_seconds() / 60
    return (f"{minutes:.0f} min" if minutes < 120 else f"{minutes / 60:.1f} h" if minutes < 2880
            else f"{minutes / 1440:.1f} days")


def _chain_time_lines(d: Mapping[str, Any]) -> list[str]:
    """The data's time beside the run's: a stale chain is visible (issue 12)."""
    newest = (d.get("window") or {}).get("newest_snapshot")
    created = d.get("created_at")
    if not newest or not created:
        return []
    n, c = datetime.fromisoformat(newest), datetime.fromisoformat(created)
    label = "Chain time" if d["source"] == "live" else "Newest snap"
    return [f"{label:12}{n:%Y-%m-%d %H:%M}Z  (age {_age(c, n)} at run time {c:%Y-%m-%d %H:%M}Z)"]


def render_summary(d: Mapping[str, Any], db: str | PathLike[str]) -> str:
    """The text `calib auto-calibrate` / `calib calibrate-live` print: a result dict (`to_dict()`, plus
    the live run's `policy`) and the history file it was recorded in."""
    gm, dq = d["global_metrics"], d["data_quality"]
    w = d.get("window") or {}
    lines = [
        f"calib {d['source']} calibration - {d['underlying']}" + ("  (replay)" if d.get("replay") else ""),
        f"Window      {str(w.get('start', '-'))[:16]}Z -> {str(w.get('end', '-'))[:16]}Z"
        + (f"  (lookback {d['lookback_days']:g} d)" if d.get("lookback_days") else ""),
        f"DTE range   {d['dte_min']:g}-{d['dte_max']:g} days    samples {d['n_samples']:,} "
        f"from {d['n_snapshots']:,} snapshots    rows scanned {dq['rows_scanned']:,}",
        f"RV_7d       {_fmt(gm['rv_7d_pct'], '.1f', '%')}    ATM IV {_fmt(gm['atm_iv_pct'], '.1f', '%')}"
        f"    IV/RV {_fmt(gm.get('iv_rv_ratio'), '.3f')}",
        *_chain_time_lines(d),
        f"Multiplier  tested {_fmt(gm['multiplier_tested'], '.4f')}    recommended "
        f"{_fmt(gm['recommended_iv_multiplier'], '.4f')}{_ci(gm)}" + ("  (AT BOUND)" if gm["at_bound"] else "")
        + f"    current-skew {_fmt(gm.get('recommended_iv_multiplier_current_skew'), '.4f')}",
        "            (Recommended goes with the recommended skew below; current-skew is the multiplier fitted with",
        "            your current skew, the value the live policy smooths and applies until you change the skew)",
        "",
        f"{'':16}{'MAE %':>10}{'vMAE %':>10}{'bias %':>10}{'MAE volpt':>11}",
    ]
    t = gm["tested"]
    lines.append(f"{'at tested':16}{_fmt(t['mae_pct']):>10}{_fmt(t['vega_weighted_mae_pct']):>10}"
                 f"{_fmt(t['bias_pct']):>10}{_fmt(t['mae_vol_points']):>11}")
    lines.append(f"{'at recommended':16}{_fmt(gm['mae_pct']):>10}{_fmt(gm['vega_weighted_mae_pct']):>10}"
                 f"{_fmt(gm['bias_pct']):>10}{_fmt(gm['mae_vol_points']):>11}")
    if d["bands"]:
        lines += ["", f"{'Band':12}{'DTE':>10}{'samples':>10}{'Rec. IV Mult':>14}{'90% CI':>18}{'Cur. skew':>11}"
                      f"{'vMAE %':>10}{'MAE %':>10}  Guard"]
        for b in d["bands"]:
            rng = f"{b['dte_min']:g}-{b['dte_max']:g}"
            lines.append(f"{b['name']:12}{rng:>10}{b['n_samples']:>10,}"
                         f"{_fmt(b['recommended_iv_multiplier'], '.4f'):>14}{_ci(b).strip() or '-':>18}"
                         f"{_fmt(b.get('recommended_iv_multiplier_current_skew'), '.4f'):>11}"
                         f"{_fmt(b['vega_weighted_mae_pct']):>10}{_fmt(b['mae_pct']):>10}  "
                         + _BAND_GUARD.get(b.get("status", "ok"), str(b.get("status"))))
    sk = d.get("skew")
    if sk and sk.get("misfit") is not None:
        lines += ["", f"Skew misfit {sk['misfit']:.4f}  (max |diff| {sk['max_abs_diff']:.4f} at z = "
                      f"{sk['largest_diff_anchor']:+g})"]
    if sk:
        lines += _wings_lines(sk)
    cov = dq.get("coverage_pct")
    lines += ["", f"Data quality: {dq['status']}  (coverage {_fmt(cov, '.1f', '%')}, "
                  f"{dq['rows_used']:,} of {dq['rows_scanned']:,} rows used, {dq['files_skipped']} file(s) skipped)"]
    for issue in dq["issues"]:
        if issue["severity"] != "info" or issue["code"] in ("window_clamped",):
            lines.append(f"  [{issue['severity']}] {issue['code']}: {issue['message']}")
    pol = d.get("policy")
    if pol:
        lines.append(f"Policy: {pol['decision'].upper()} - {pol['reason']}  (smoothed "
                     f"{_fmt(pol['smoothed_multiplier'], '.4f')})")
    lines += ["", status_line(d["status"], d["reason"]), f"Recorded run {d['run_id']} in {db}"]
    return "\n".join(lines)


def _wings_lines(sk: Mapping[str, Any]) -> list[str]:
    """Quotes beyond the outer skew anchors: their shares, the error there and within, the suggested grid."""
    b = sk.get("beyond_anchors")
    if not b or not b.get("n_quotes"):
        return []
    a = sk["anchors"]
    out = [f"Wings       beyond z {a[0]:+g} / {a[-1]:+g} ({sk.get('extrapolation', 'flat')}): "
           f"{_fmt(b['quote_share_pct'], '.1f', '%')} of quotes, {_fmt(b['vega_share_pct'], '.1f', '%')} of vega;"
           f"  vMAE there {_fmt(b['vmae_pct'])} %, within {_fmt(b['inside_vmae_pct'])} %"]
    sugg = sk.get("suggested_anchors_z")
    if sugg and len(sugg) != len(a):
        ratios = sk.get("suggested_anchors_ratios") or []
        grid = ", ".join(f"{z:+g}:{r:.3f}" for z, r in zip(sugg, ratios, strict=False))
        out.append(f"            suggested anchors (z:ratio) {grid}"
                   f"  (multiplier {_fmt(sk.get('suggested_iv_multiplier'), '.4f')})")
    return out

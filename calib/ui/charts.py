"""Altair charts of the dashboard, built from `calib.queries` data (no streamlit here).

Status colours are the badges' (`calib.ui.format.STATUS_COLOUR`); series
colours are fixed: market blue, current model grey, recommended purple.
Times are plotted in UTC.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import altair as alt
import polars as pl

from calib.ui import format as fmt

MARKET_COLOUR = "#4285f4"
CURRENT_COLOUR = "#9aa0a6"
RECOMMENDED_COLOUR = "#a142f4"
BOUND_COLOUR = "#d93025"

_STATUS_DOMAIN = [fmt.STATUS_LABEL[s] for s in ("ok", "degraded", "failed")]
_STATUS_RANGE = [fmt.STATUS_COLOUR[s] for s in ("ok", "degraded", "failed")]
_STATUS_SHAPES = ["circle", "diamond", "cross"]
_HEIGHT = 240


def _status_scale() -> alt.Scale:
    return alt.Scale(domain=_STATUS_DOMAIN, range=_STATUS_RANGE)


def history_points(runs: pl.DataFrame) -> pl.DataFrame:
    """One row per harvested run: date (UTC ISO string), status label, multiplier, vMAE %."""
    rows = []
    for r in runs.iter_rows(named=True):
        ts = fmt.to_utc(r.get("window_end") or r.get("created_at"))
        if ts is None:
            continue
        rows.append({
            "date": ts.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "Status": fmt.status_label(r.get("status")),
            "Multiplier": r.get("recommended_multiplier"),
            "ci_low": r.get("ci_low"),
            "ci_high": r.get("ci_high"),
            "vMAE %": r.get("vega_weighted_mae_pct"),
            "Reason": fmt.text(r.get("reason")),
            "candidate": r.get("status") != "failed",
        })
    schema = {"date": pl.String, "Status": pl.String, "Multiplier": pl.Float64, "ci_low": pl.Float64,
              "ci_high": pl.Float64, "vMAE %": pl.Float64, "Reason": pl.String, "candidate": pl.Boolean}
    return pl.DataFrame(rows, schema=schema) if rows else pl.DataFrame(schema=schema)


def _domain(values: pl.Series, candidates: pl.Series, bounds: tuple[float, float] | None,
            floor: float | None) -> tuple[float, float]:
    """y range from the candidate (non-failed) runs and the guardrails, so one absurd failed run
    does not flatten the others."""
    base = candidates.drop_nulls() if candidates.drop_nulls().len() else values.drop_nulls()
    lo, hi = float(base.min()), float(base.max())  # type: ignore[arg-type]
    if bounds is not None:
        lo, hi = min(lo, bounds[0]), max(hi, bounds[1])
    pad = (hi - lo) * 0.1 or max(abs(hi) * 0.1, 0.1)
    lo, hi = lo - pad, hi + pad
    if floor is not None:
        lo = max(lo, floor)
    return lo, hi


def history_chart(runs: pl.DataFrame, field: str, *, title: str, bounds: tuple[float, float] | None = None,
                  y_format: str = ".2f", floor: float | None = None) -> alt.LayerChart:
    """`field` ("Multiplier" or "vMAE %") over time: points coloured and shaped by status.

    The line joins only OK and Degraded runs (failed runs are never candidates);
    `bounds` draws the guardrail range as dashed rules. The y range fits the
    candidates and the guardrails; a value outside it is drawn at the edge as
    a triangle, with its true value in the tooltip.
    """
    data = history_points(runs).filter(pl.col(field).is_not_null())
    if data.height:
        lo, hi = _domain(data[field], data.filter("candidate")[field], bounds, floor)
    else:
        lo, hi = bounds if bounds is not None else (0.0, 1.0)
    v = pl.col(field)
    data = data.with_columns(
        plotted=v.clip(lo, hi),
        marker=pl.when(v > hi).then(pl.lit("above")).when(v < lo).then(pl.lit("below")).otherwise(pl.col("Status")),
    )
    x = alt.X("date:T", title="Window end (UTC)", scale=alt.Scale(type="utc"),
              axis=alt.Axis(format="%b %d %H:%M", labelAngle=0, labelOverlap=True))
    y = alt.Y("plotted:Q", title=title, scale=alt.Scale(domain=[lo, hi], nice=False, zero=False),
              axis=alt.Axis(format=".2f"))
    line = alt.Chart(data).transform_filter("datum.candidate").mark_line(
        color=CURRENT_COLOUR, strokeWidth=1.5).encode(x=x, y=y)
    color = alt.Color("Status:N", scale=_status_scale(), legend=alt.Legend(orient="top", title=None))
    tooltip = [alt.Tooltip("date:T", title="Window end (UTC)", format="%Y-%m-%d %H:%M", formatType="utc"),
               alt.Tooltip("Status:N"), alt.Tooltip(f"{field}:Q", format=y_format), alt.Tooltip("Reason:N")]
    inside = alt.Chart(data.filter(pl.col("marker") == pl.col("Status"))).mark_point(
        size=70, filled=True, opacity=0.95).encode(
        x=x, y=y, color=color, tooltip=tooltip,
        shape=alt.Shape("Status:N", scale=alt.Scale(domain=_STATUS_DOMAIN, range=_STATUS_SHAPES)))
    layers: list[Any] = [line, inside]
    if field == "Multiplier":  # the 90 % bootstrap interval as an error bar on each plotted run
        bars = data.filter(pl.col("ci_low").is_not_null() & (pl.col("marker") == pl.col("Status"))).with_columns(
            bar_lo=pl.col("ci_low").clip(lo, hi), bar_hi=pl.col("ci_high").clip(lo, hi))
        if bars.height:
            layers.insert(1, alt.Chart(bars).mark_rule(strokeWidth=1.5, opacity=0.7).encode(
                x=x, y=alt.Y("bar_lo:Q", scale=alt.Scale(domain=[lo, hi], nice=False, zero=False)), y2="bar_hi:Q",
                color=color,
                tooltip=[alt.Tooltip("ci_low:Q", title="90% CI low", format=".4f"),
                         alt.Tooltip("ci_high:Q", title="90% CI high", format=".4f")]))
    for marker, shape in (("above", "triangle-up"), ("below", "triangle-down")):
        off = data.filter(pl.col("marker") == marker)
        if off.height:
            layers.append(alt.Chart(off).mark_point(shape=shape, size=90, filled=True, opacity=0.95).encode(
                x=x, y=y, color=color, tooltip=tooltip))
    if bounds is not None:
        rules = pl.DataFrame({"bound": list(bounds), "label": ["guardrail min", "guardrail max"]})
        layers.append(alt.Chart(rules).mark_rule(color=BOUND_COLOUR, strokeDash=[4, 4], opacity=0.6).encode(
            y="bound:Q", tooltip=[alt.Tooltip("label:N", title="Guardrail"), alt.Tooltip("bound:Q", format=".2f")]))
    return alt.LayerChart(layer=layers, height=_HEIGHT)


def _series_scale(domain: list[str], colours: list[str]) -> alt.Scale:
    return alt.Scale(domain=domain, range=colours)


def skew_frame(result: Mapping[str, Any]) -> pl.DataFrame:
    """Long frame: z, ratio, series (Current / Recommended)."""
    sk = result.get("skew") or {}
    anchors = sk.get("anchors") or []
    rows = []
    for name, key in (("Current", "current"), ("Recommended", "recommended")):
        values = sk.get(key) or []
        rows += [{"z": float(z), "ratio": v, "series": name}
                 for z, v in zip(anchors, values, strict=False) if v is not None]
    schema = {"z": pl.Float64, "ratio": pl.Float64, "series": pl.String}
    return pl.DataFrame(rows, schema=schema) if rows else pl.DataFrame(schema=schema)


def skew_chart(result: Mapping[str, Any]) -> alt.Chart:
    """Skew ratio to ATM vol at each anchor: current (grey) vs recommended (purple)."""
    data = skew_frame(result)
    scale = _series_scale(["Current", "Recommended"], [CURRENT_COLOUR, RECOMMENDED_COLOUR])
    return alt.Chart(data).mark_line(point=alt.OverlayMarkDef(size=60, filled=True)).encode(
        x=alt.X("z:Q", title="Standardized moneyness z"),
        y=alt.Y("ratio:Q", title="Ratio to ATM vol", scale=alt.Scale(zero=False)),
        color=alt.Color("series:N", scale=scale, legend=alt.Legend(orient="top", title=None, labelLimit=0)),
        strokeDash=alt.StrokeDash("series:N", scale=alt.Scale(domain=["Current", "Recommended"],
                                                               range=[[1, 0], [6, 3]]), legend=None),
        tooltip=[alt.Tooltip("series:N", title="Curve"), alt.Tooltip("z:Q", format="+.1f"),
                 alt.Tooltip("ratio:Q", format=".4f")],
    ).properties(height=_HEIGHT)


SMILE_SERIES = ("Market (mark IV)", "Model, current skew", "Model, recommended skew")


def smile_frame(result: Mapping[str, Any]) -> pl.DataFrame:
    """Long frame: z bin, IV %, series, quotes per bin."""
    sm = (result.get("skew") or {}).get("smile") or {}
    zs = sm.get("z") or []
    ns = sm.get("n") or []
    rows = []
    for name, key in zip(SMILE_SERIES, ("market_iv_pct", "model_iv_pct", "recommended_iv_pct"), strict=True):
        for i, v in enumerate(sm.get(key) or []):
            if v is not None and i < len(zs):
                rows.append({"z": float(zs[i]), "iv_pct": float(v), "series": name,
                             "n": int(ns[i]) if i < len(ns) and ns[i] is not None else None})
    schema = {"z": pl.Float64, "iv_pct": pl.Float64, "series": pl.String, "n": pl.Int64}
    return pl.DataFrame(rows, schema=schema) if rows else pl.DataFrame(schema=schema)


def smile_chart(result: Mapping[str, Any]) -> alt.LayerChart:
    """Market IV vs model IV by standardized moneyness (bins of the newest snapshot)."""
    data = smile_frame(result)
    scale = _series_scale(list(SMILE_SERIES), [MARKET_COLOUR, CURRENT_COLOUR, RECOMMENDED_COLOUR])
    x = alt.X("z:Q", title="Standardized moneyness z")
    y = alt.Y("iv_pct:Q", title="Implied vol (%)", scale=alt.Scale(zero=False))
    color = alt.Color("series:N", scale=scale, legend=alt.Legend(orient="top", title=None, labelLimit=0))
    tooltip = [alt.Tooltip("series:N", title="Series"), alt.Tooltip("z:Q", format="+.2f"),
               alt.Tooltip("iv_pct:Q", title="IV (%)", format=".2f"), alt.Tooltip("n:Q", title="Quotes")]
    market = alt.Chart(data).transform_filter(alt.datum.series == SMILE_SERIES[0]).mark_point(
        filled=True, size=55, opacity=0.9).encode(x=x, y=y, color=color, tooltip=tooltip)
    model = alt.Chart(data).transform_filter(alt.datum.series != SMILE_SERIES[0]).mark_line(strokeWidth=2).encode(
        x=x, y=y, color=color,
        strokeDash=alt.StrokeDash("series:N", scale=alt.Scale(domain=list(SMILE_SERIES[1:]), range=[[1, 0], [6, 3]]),
                                  legend=None),
        tooltip=tooltip)
    return alt.LayerChart(layer=[model, market], height=_HEIGHT)

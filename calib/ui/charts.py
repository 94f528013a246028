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
_HEIGHT = 300  # with autosize "fit" the legend is inside: ~220 px of plot under a 3-row legend


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


def _domain(values: pl.Series, candidates: pl.Series, floor: float | None) -> tuple[float, float]:
    """y range from the candidate (non-failed) runs, so one absurd failed run does not flatten the others.

    The guardrails do not set the scale: a drift of 1.1045 -> 1.1217 must not draw flat
    between 0.7 and 1.6 (they are drawn only when inside this range).
    """
    base = candidates.drop_nulls() if candidates.drop_nulls().len() else values.drop_nulls()
    lo, hi = float(base.min()), float(base.max())  # type: ignore[arg-type]
    pad = (hi - lo) * 0.15 or max(abs(hi) * 0.02, 0.01)
    lo, hi = lo - pad, hi + pad
    if floor is not None:
        lo = max(lo, floor)
    return lo, hi


def history_chart(runs: pl.DataFrame, field: str, *, title: str, bounds: tuple[float, float] | None = None,
                  y_format: str = ".2f", floor: float | None = None) -> alt.LayerChart:
    """`field` ("Multiplier" or "vMAE %") over time: points coloured and shaped by status.

    The line joins only OK and Degraded runs (failed runs are never candidates);
    `bounds` draws the guardrail range as dashed rules where they fall inside the
    y range, which fits the candidates (not the guardrails); a value outside it is
    drawn at the edge as a triangle, with its true value in the tooltip.
    """
    data = history_points(runs).filter(pl.col(field).is_not_null())
    if data.height:
        lo, hi = _domain(data[field], data.filter("candidate")[field], floor)
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
              axis=alt.Axis(format=_tick_format(lo, hi), tickCount=6))
    line = alt.Chart(data).transform_filter("datum.candidate").mark_line(
        color=CURRENT_COLOUR, strokeWidth=1.5).encode(x=x, y=y)
    color = alt.Color("Status:N", scale=_status_scale(), legend=_legend(columns=3))
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
    in_view = [(b, label) for b, label in zip(bounds or (), ("guardrail min", "guardrail max"), strict=False)
               if lo <= b <= hi]
    if in_view:
        rules = pl.DataFrame({"bound": [b for b, _ in in_view], "label": [la for _, la in in_view]})
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
        color=alt.Color("series:N", scale=scale, legend=_legend()),
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
    color = alt.Color("series:N", scale=scale, legend=_legend(columns=1))  # long labels: one per row on a phone
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


def _tick_format(lo: float, hi: float) -> str:
    """Enough decimals that ticks over [lo, hi] differ (a 1.10 -> 1.12 drift needs three)."""
    span = hi - lo
    return ".4f" if span < 0.02 else ".3f" if span < 0.2 else ".2f" if span < 5 else ".1f"


def _legend(**kw: Any) -> alt.Legend:
    """Legends above the plot, wrapping in two columns so a phone-width chart does not clip them."""
    return alt.Legend(orient="top", title=None, labelLimit=0, columns=kw.pop("columns", 2), **kw)


# --------------------------------------------------------------------------- error map


def _z_label(lo: float | None, hi: float | None) -> str:
    if lo is None:
        return f"z < {hi:+.2g}"
    if hi is None:
        return f"z ≥ {lo:+.2g}"
    return f"{lo:+.2g} to {hi:+.2g}"


ERROR_MEASURES: dict[str, tuple[str, str]] = {
    "Vol pts": ("mean_err_vol_points", "Mean error (vol pts, model − market)"),
    "|Vol pts|": ("mean_abs_err_vol_points", "Mean |error| (vol pts)"),
    "% of mark": ("mean_err_pct", "Mean error (% of mark)"),
    "|% of mark|": ("mean_abs_err_pct", "Mean |error| (% of mark)"),
}


def error_map_frame(result: Mapping[str, Any], *, tested: bool = False) -> pl.DataFrame:
    """One row per non-empty DTE x z cell: labels, quote count and the four mean errors."""
    em = result.get("error_map") or {}
    if tested:
        em = em.get("tested") or {}
    d_edges, z_edges, counts = em.get("dte_edges_days") or [], em.get("z_edges") or [], em.get("counts") or []
    rows = []
    for i, row in enumerate(counts):
        for j, n in enumerate(row):
            if not n or i + 1 >= len(d_edges) or j + 1 >= len(z_edges):
                continue
            rows.append({"DTE": f"{d_edges[i]:g}–{d_edges[i + 1]:g} d", "dte_order": i,
                         "z": _z_label(z_edges[j], z_edges[j + 1]), "z_order": j, "Quotes": int(n),
                         **{key: (em.get(key) or [[]])[i][j] for key, _ in ERROR_MEASURES.values()}})
    schema = {"DTE": pl.String, "dte_order": pl.Int64, "z": pl.String, "z_order": pl.Int64, "Quotes": pl.Int64,
              **{key: pl.Float64 for key, _ in ERROR_MEASURES.values()}}
    return pl.DataFrame(rows, schema=schema) if rows else pl.DataFrame(schema=schema)


def error_map_chart(result: Mapping[str, Any], measure: str = "Vol pts", *,
                    tested: bool = False) -> alt.LayerChart:
    """Heatmap of one mean error by DTE bucket (rows) x z bucket (columns), value and quote count in each cell."""
    key, title = ERROR_MEASURES[measure]
    data = error_map_frame(result, tested=tested)
    signed = key.startswith("mean_err")
    top = float(data[key].abs().max() or 1.0) if data.height else 1.0  # type: ignore[arg-type]
    scale = (alt.Scale(scheme="redblue", domain=[-top, top], reverse=True) if signed
             else alt.Scale(scheme="oranges", domain=[0, top]))
    z_sort = data.sort("z_order")["z"].unique(maintain_order=True).to_list()
    d_sort = data.sort("dte_order")["DTE"].unique(maintain_order=True).to_list()
    x = alt.X("z:N", title="Moneyness bucket (z)", sort=z_sort, axis=alt.Axis(labelAngle=0, labelLimit=0))
    y = alt.Y("DTE:N", title="Days to expiry", sort=d_sort)
    fmt_ = ".2f"
    tooltip = [alt.Tooltip("DTE:N"), alt.Tooltip("z:N", title="z bucket"), alt.Tooltip("Quotes:Q", format=","),
               *(alt.Tooltip(f"{k}:Q", title=t, format=fmt_) for k, t in ERROR_MEASURES.values())]
    base = alt.Chart(data).encode(x=x, y=y)
    rect = base.mark_rect(stroke="white", strokeWidth=1).encode(
        color=alt.Color(f"{key}:Q", title=title, scale=scale,
                        legend=alt.Legend(orient="top", titleLimit=0, gradientLength=220)),
        tooltip=tooltip)
    text = base.mark_text(fontSize=13, dy=-4).encode(
        text=alt.Text(f"{key}:Q", format="+.2f" if signed else ".2f"), tooltip=tooltip)
    count = base.mark_text(fontSize=10, dy=15, opacity=0.75).encode(
        text=alt.Text("Quotes:Q", format=","), tooltip=tooltip)
    return alt.LayerChart(layer=[rect, text, count]).properties(height=alt.Step(56))  # rows tall enough for 2 lines


# --------------------------------------------------------------------------- term structure and smiles

TERM_SERIES = ("Market ATM IV", "Model, current", "Model, recommended")


def expiries_of(result: Mapping[str, Any]) -> list[dict[str, Any]]:
    return [e for e in (result.get("expiries") or []) if isinstance(e, dict)]


def term_frame(result: Mapping[str, Any]) -> pl.DataFrame:
    """Long frame per listed expiry: DTE, expiry label, series, ATM IV %, and the multiplier of that surface."""
    rows = []
    for e in expiries_of(result):
        for name, iv_key, m_key in zip(TERM_SERIES, ("atm_market_iv_pct", "atm_current_iv_pct",
                                                     "atm_recommended_iv_pct"),
                                       (None, "multiplier_current", "multiplier_recommended"), strict=True):
            if e.get(iv_key) is None:
                continue
            rows.append({"dte": float(e["dte_days"]), "expiry": str(e.get("expiry")), "series": name,
                         "iv_pct": float(e[iv_key]), "multiplier": e.get(m_key) if m_key else None,
                         "quotes": e.get("n_quotes")})
    schema = {"dte": pl.Float64, "expiry": pl.String, "series": pl.String, "iv_pct": pl.Float64,
              "multiplier": pl.Float64, "quotes": pl.Int64}
    return pl.DataFrame(rows, schema=schema) if rows else pl.DataFrame(schema=schema)


def term_structure_chart(result: Mapping[str, Any]) -> alt.LayerChart:
    """ATM IV per listed expiry: market (points) vs the model at the current and the recommended surface."""
    data = term_frame(result)
    scale = _series_scale(list(TERM_SERIES), [MARKET_COLOUR, CURRENT_COLOUR, RECOMMENDED_COLOUR])
    x = alt.X("dte:Q", title="Days to expiry", scale=alt.Scale(type="sqrt", zero=True))
    y = alt.Y("iv_pct:Q", title="ATM implied vol (%)", scale=alt.Scale(zero=False))
    color = alt.Color("series:N", scale=scale, legend=_legend())
    tooltip = [alt.Tooltip("expiry:N", title="Expiry"), alt.Tooltip("dte:Q", title="DTE", format=".2f"),
               alt.Tooltip("series:N"), alt.Tooltip("iv_pct:Q", title="ATM IV (%)", format=".2f"),
               alt.Tooltip("quotes:Q", title="Quotes")]
    market = alt.Chart(data).transform_filter(alt.datum.series == TERM_SERIES[0]).mark_point(
        filled=True, size=70).encode(x=x, y=y, color=color, tooltip=tooltip)
    model = alt.Chart(data).transform_filter(alt.datum.series != TERM_SERIES[0]).mark_line(
        strokeWidth=2, point=alt.OverlayMarkDef(size=30)).encode(
        x=x, y=y, color=color, tooltip=tooltip,
        strokeDash=alt.StrokeDash("series:N", scale=alt.Scale(domain=list(TERM_SERIES[1:]), range=[[1, 0], [6, 3]]),
                                  legend=None))
    return alt.LayerChart(layer=[model, market], height=_HEIGHT)


def multiplier_term_chart(result: Mapping[str, Any]) -> alt.Chart:
    """The multiplier each listed expiry is priced with: tested (current) vs its band's recommended one."""
    data = term_frame(result).filter(pl.col("multiplier").is_not_null())
    domain = ["Model, current", "Model, recommended"]
    return alt.Chart(data).mark_line(interpolate="step-after", strokeWidth=2, point=alt.OverlayMarkDef(size=40)).encode(
        x=alt.X("dte:Q", title="Days to expiry", scale=alt.Scale(type="sqrt", zero=True)),
        y=alt.Y("multiplier:Q", title="IV multiplier", scale=alt.Scale(zero=False),
                axis=alt.Axis(format=".3f")),
        color=alt.Color("series:N", scale=_series_scale(domain, [CURRENT_COLOUR, RECOMMENDED_COLOUR]),
                        legend=_legend()),
        tooltip=[alt.Tooltip("expiry:N", title="Expiry"), alt.Tooltip("series:N"),
                 alt.Tooltip("multiplier:Q", format=".4f")],
    ).properties(height=_HEIGHT)


def expiry_options(result: Mapping[str, Any]) -> tuple[list[str], int]:
    """Expiry labels of a run and the default: the nearest expiry inside the run's DTE range."""
    exps = expiries_of(result)
    labels = [f"{e.get('expiry')} · {float(e['dte_days']):.1f} d" for e in exps]
    if not exps:
        return [], 0
    lo, hi = float(result.get("dte_min") or 0.0), float(result.get("dte_max") or 1e9)
    dte = [float(e["dte_days"]) for e in exps]
    inside = [i for i, d in enumerate(dte) if lo <= d <= hi]
    default = inside[0] if inside else min(range(len(dte)), key=lambda i: min(abs(dte[i] - lo), abs(dte[i] - hi)))
    return labels, default


def smile_expiry_frame(result: Mapping[str, Any], index: int) -> pl.DataFrame:
    """Long frame of one expiry's strikes: K/F, z, series, IV %."""
    exps = expiries_of(result)
    schema = {"strike_rel": pl.Float64, "z": pl.Float64, "series": pl.String, "iv_pct": pl.Float64}
    if not 0 <= index < len(exps):
        return pl.DataFrame(schema=schema)
    e = exps[index]
    k, z = e.get("strike_rel") or [], e.get("z") or []
    parts = []
    for name, key in zip(SMILE_SERIES, ("market_iv_pct", "current_iv_pct", "recommended_iv_pct"), strict=True):
        vals = e.get(key) or []
        if len(vals) == len(k) == len(z) and k:
            parts.append(pl.DataFrame({"strike_rel": k, "z": z, "series": [name] * len(k), "iv_pct": vals},
                                      schema=schema))
    return pl.concat(parts).drop_nulls("iv_pct") if parts else pl.DataFrame(schema=schema)


def smile_expiry_chart(result: Mapping[str, Any], index: int, *, by: str = "strike_rel") -> alt.LayerChart:
    """One expiry's smile: mark IV per strike (points) vs the model at the current and recommended skew."""
    data = smile_expiry_frame(result, index)
    scale = _series_scale(list(SMILE_SERIES), [MARKET_COLOUR, CURRENT_COLOUR, RECOMMENDED_COLOUR])
    x_title = "Strike / forward (K/F)" if by == "strike_rel" else "Standardized moneyness z (recommended)"
    x = alt.X(f"{by}:Q", title=x_title, scale=alt.Scale(zero=False),
              axis=alt.Axis(format=".2f" if by == "strike_rel" else "+.1f"))
    y = alt.Y("iv_pct:Q", title="Implied vol (%)", scale=alt.Scale(zero=False))
    color = alt.Color("series:N", scale=scale, legend=_legend(columns=1))
    tooltip = [alt.Tooltip("series:N"), alt.Tooltip("strike_rel:Q", title="K/F", format=".4f"),
               alt.Tooltip("z:Q", format="+.2f"), alt.Tooltip("iv_pct:Q", title="IV (%)", format=".2f")]
    market = alt.Chart(data).transform_filter(alt.datum.series == SMILE_SERIES[0]).mark_point(
        filled=True, size=50, opacity=0.9).encode(x=x, y=y, color=color, tooltip=tooltip)
    model = alt.Chart(data).transform_filter(alt.datum.series != SMILE_SERIES[0]).mark_line(strokeWidth=2).encode(
        x=x, y=y, color=color, tooltip=tooltip,
        strokeDash=alt.StrokeDash("series:N", scale=alt.Scale(domain=list(SMILE_SERIES[1:]), range=[[1, 0], [6, 3]]),
                                  legend=None))
    return alt.LayerChart(layer=[model, market], height=_HEIGHT)


# --------------------------------------------------------------------------- history over time


def _time_x(title: str, field: str = "date") -> alt.X:
    return alt.X(f"{field}:T", title=title, scale=alt.Scale(type="utc"),
                 axis=alt.Axis(format="%b %d %H:%M", labelAngle=0, labelOverlap=True))


def vol_history_frame(runs: pl.DataFrame) -> pl.DataFrame:
    """Long frame of RV_7d and ATM IV (percent) per non-failed run over time (window end, else created)."""
    schema = {"date": pl.String, "series": pl.String, "vol_pct": pl.Float64, "source": pl.String}
    if runs.height == 0 or "rv_7d_pct" not in runs.columns:
        return pl.DataFrame(schema=schema)
    rows = []
    for r in runs.iter_rows(named=True):
        ts = fmt.to_utc(r.get("window_end") or r.get("created_at"))
        if ts is None or r.get("status") == "failed":
            continue
        for name, key in (("RV_7d", "rv_7d_pct"), ("ATM IV", "atm_iv_pct")):
            if r.get(key) is not None:
                rows.append({"date": ts.strftime("%Y-%m-%dT%H:%M:%SZ"), "series": name, "vol_pct": float(r[key]),
                             "source": "live" if r.get("source") == "live" else "auto-calibrate"})
    return pl.DataFrame(rows, schema=schema).sort("date") if rows else pl.DataFrame(schema=schema)


def vol_history_chart(runs: pl.DataFrame) -> alt.Chart:
    """RV_7d and ATM IV of the runs over time (the gap between them is what the multiplier prices)."""
    data = vol_history_frame(runs)
    return alt.Chart(data).mark_line(strokeWidth=2, point=alt.OverlayMarkDef(size=35)).encode(
        x=_time_x("Run window end (UTC)"),
        y=alt.Y("vol_pct:Q", title="Vol (%)", scale=alt.Scale(zero=False)),
        color=alt.Color("series:N", scale=_series_scale(["RV_7d", "ATM IV"], [CURRENT_COLOUR, MARKET_COLOUR]),
                        legend=_legend()),
        tooltip=[alt.Tooltip("date:T", title="Window end (UTC)", format="%Y-%m-%d %H:%M", formatType="utc"),
                 alt.Tooltip("series:N"), alt.Tooltip("vol_pct:Q", title="Vol (%)", format=".2f"),
                 alt.Tooltip("source:N", title="Run")],
    ).properties(height=_HEIGHT)


def applied_log_frame(log: pl.DataFrame) -> pl.DataFrame:
    """Applied multipliers over time per scope, from `applied_multipliers_log`."""
    schema = {"date": pl.String, "scope": pl.String, "multiplier": pl.Float64, "reason": pl.String}
    if log.height == 0:
        return pl.DataFrame(schema=schema)
    return log.select(
        date=pl.col("changed_at").dt.convert_time_zone("UTC").dt.strftime("%Y-%m-%dT%H:%M:%SZ"),
        scope=pl.col("scope").str.to_titlecase(), multiplier=pl.col("new_multiplier").cast(pl.Float64),
        reason=pl.col("reason").fill_null(""))


def applied_log_chart(log: pl.DataFrame) -> alt.Chart:
    """Each scope's applied multiplier as a step line: it holds until the next change."""
    data = applied_log_frame(log)
    return alt.Chart(data).mark_line(interpolate="step-after", strokeWidth=2,
                                     point=alt.OverlayMarkDef(size=45, filled=True)).encode(
        x=_time_x("Changed at (UTC)"),
        y=alt.Y("multiplier:Q", title="Applied multiplier", scale=alt.Scale(zero=False),
                axis=alt.Axis(format=".3f")),
        color=alt.Color("scope:N", title=None, legend=_legend()),
        tooltip=[alt.Tooltip("date:T", title="Changed at (UTC)", format="%Y-%m-%d %H:%M", formatType="utc"),
                 alt.Tooltip("scope:N"), alt.Tooltip("multiplier:Q", format=".4f"), alt.Tooltip("reason:N")],
    ).properties(height=_HEIGHT)

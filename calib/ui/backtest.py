"""The Backtest section's charts and figures, from `calib.store.backtests.newest_backtest` (no streamlit here).

Applied multiplier over time against the recommended one with its 90 %
interval band; out-of-sample vMAE of the policy, the static multiplier and
the hindsight-best one; the summary numbers.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import altair as alt
import polars as pl

from calib.ui import format as fmt
from calib.ui.charts import CURRENT_COLOUR, RECOMMENDED_COLOUR

APPLIED_COLOUR = "#188038"
BEST_COLOUR = "#f29900"
_HEIGHT = 260


def _dates(steps: pl.DataFrame) -> pl.Series:
    return pl.Series("date", [fmt.to_utc(t).strftime("%Y-%m-%dT%H:%M:%SZ") for t in steps["as_of"]])  # type: ignore[union-attr]


def multiplier_chart(steps: pl.DataFrame) -> alt.TopLevelMixin:
    """Recommended multiplier with its interval band, and the applied multiplier as a step line."""
    df = steps.select("recommended_iv_multiplier", "ci_low", "ci_high", "applied_multiplier", "decision",
                      "status").with_columns(_dates(steps))
    base = alt.Chart(df).encode(x=alt.X("date:T", title="As of (UTC)"))
    band = base.mark_area(opacity=0.18, color=RECOMMENDED_COLOUR).encode(
        y=alt.Y("ci_low:Q", title="Multiplier", scale=alt.Scale(zero=False)), y2="ci_high:Q",
        tooltip=[alt.Tooltip("date:T", format="%Y-%m-%d %H:%M"), alt.Tooltip("ci_low:Q", format=".4f"),
                 alt.Tooltip("ci_high:Q", format=".4f")])
    rec = base.mark_line(point=alt.OverlayMarkDef(color=RECOMMENDED_COLOUR), color=RECOMMENDED_COLOUR).encode(
        y="recommended_iv_multiplier:Q",
        tooltip=[alt.Tooltip("date:T", format="%Y-%m-%d %H:%M"),
                 alt.Tooltip("recommended_iv_multiplier:Q", title="recommended", format=".4f"), "status:N"])
    applied = base.mark_line(interpolate="step-after", color=APPLIED_COLOUR, strokeWidth=2.5).encode(
        y="applied_multiplier:Q",
        tooltip=[alt.Tooltip("date:T", format="%Y-%m-%d %H:%M"),
                 alt.Tooltip("applied_multiplier:Q", title="applied", format=".4f"), "decision:N"])
    return alt.layer(band, rec, applied).properties(height=_HEIGHT, title="Applied (green) vs recommended "
                                                                          "(purple, 90 % interval band)")


def oos_chart(steps: pl.DataFrame) -> alt.TopLevelMixin:
    """Out-of-sample vMAE per step: policy, static and hindsight-best multipliers."""
    names = {"oos_vmae_pct_policy": "policy", "oos_vmae_pct_static": "static", "oos_vmae_pct_best": "hindsight-best"}
    df = (steps.select(list(names)).with_columns(_dates(steps))
          .unpivot(index="date", variable_name="series", value_name="vmae_pct")
          .with_columns(pl.col("series").replace_strict(names)))
    colour = alt.Scale(domain=list(names.values()), range=[APPLIED_COLOUR, CURRENT_COLOUR, BEST_COLOUR])
    return alt.Chart(df).mark_line(point=True).encode(
        x=alt.X("date:T", title="As of (UTC)"), y=alt.Y("vmae_pct:Q", title="Out-of-sample vMAE (%)"),
        color=alt.Color("series:N", scale=colour, title=None, legend=alt.Legend(orient="top")),
        tooltip=[alt.Tooltip("date:T", format="%Y-%m-%d %H:%M"), "series:N",
                 alt.Tooltip("vmae_pct:Q", title="vMAE %", format=".2f")],
    ).properties(height=_HEIGHT, title="Out-of-sample vMAE: policy vs static vs hindsight-best")


def summary_metrics(info: Mapping[str, Any]) -> list[tuple[str, str, str | None]]:
    """(label, value, help) for the summary numbers of a `backtests` row."""
    def f(v: Any, spec: str) -> str:
        return "-" if v is None else f"{v:{spec}}"

    return [
        ("OOS vMAE policy", f(info.get("mean_oos_vmae_pct_policy"), ".2f") + " %", "mean over scored steps"),
        ("OOS vMAE static", f(info.get("mean_oos_vmae_pct_static"), ".2f") + " %",
         f"the start multiplier {f(info.get('start_multiplier'), '.4f')} throughout"),
        ("OOS vMAE hindsight-best", f(info.get("mean_oos_vmae_pct_best"), ".2f") + " %",
         "best multiplier for each horizon, chosen after the fact"),
        ("Policy vs static", f(info.get("improvement_pct"), "+.1f") + " %", "lower vMAE than static by this much"),
        ("Steps / applied / failed", f"{info.get('n_steps', 0)} / {info.get('n_applied', 0)} / {info.get('n_failed', 0)}",
         "policy decisions 'applied'; failed runs are never applied"),
    ]


def caption(info: Mapping[str, Any]) -> str:
    """Which backtest this is: id, range, step, horizon, lookback, engine."""
    step_h = (info.get("step_seconds") or 0) / 3600
    horizon_h = (info.get("horizon_seconds") or 0) / 3600
    return (f"Backtest {info.get('backtest_id')} · {fmt.fmt_ts(info.get('start_at'))} → {fmt.fmt_ts(info.get('end_at'))}"
            f" UTC · step {step_h:g} h · horizon {horizon_h:g} h · lookback {info.get('lookback_days') or 0:g} d · "
            f"DTE {info.get('dte_min') or 0:g}-{info.get('dte_max') or 0:g} · {info.get('engine')} "
            f"x{info.get('workers')} in {info.get('elapsed_s') or 0:.1f} s")


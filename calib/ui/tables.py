"""Section tables of the dashboard as formatted polars frames, and their HTML rendering.

Each `*_frame` function turns `calib.queries` data into a frame of display
strings whose column names carry the units. Columns whose name starts with
"_" drive rendering (row status, highlight) and are not shown. `html_table`
renders a frame as a static HTML table with status badges: every badge is a
``<span class="calib-badge" data-status="...">`` and every failed row a
``<tr class="calib-row calib-row-failed" data-status="failed">``, dimmed, so
tests and the browser can find them.
"""

from __future__ import annotations

import html
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import polars as pl

from calib.config import PolicyConfig
from calib.ui import format as fmt

# --------------------------------------------------------------------------- HTML


class Raw(str):
    """Trusted HTML that `html_table` and `kv_table` insert without escaping."""

    __slots__ = ()


# Scroll shadows: a wide table on a phone shows a shade at the edge it can scroll towards (the "local"
# white covers move with the content and hide the shade at an edge already reached).
_WRAP = ("overflow-x:auto;margin:0 0 0.75rem 0;-webkit-overflow-scrolling:touch;"
         "background:linear-gradient(to right,#fff 30%,rgba(255,255,255,0)) left center/40px 100% no-repeat local,"
         "linear-gradient(to left,#fff 30%,rgba(255,255,255,0)) right center/40px 100% no-repeat local,"
         "radial-gradient(farthest-side at 0 50%,rgba(0,0,0,0.22),rgba(0,0,0,0)) left center/14px 100% no-repeat scroll,"
         "radial-gradient(farthest-side at 100% 50%,rgba(0,0,0,0.22),rgba(0,0,0,0)) right center/14px 100% "
         "no-repeat scroll;")
_HINT = ('<div class="calib-scroll-hint" style="display:none;font-size:0.75rem;opacity:0.7;margin:0 0 2px 0;">'
         "⇆ Swipe sideways for more columns</div>")
# Injected once per page (app.py): the hint shows on narrow screens only.
PAGE_STYLE = ("<style>@media (max-width: 760px) { .calib-scroll-hint { display: block !important; } }"
              "</style>")
_TABLE = ("width:100%;border-collapse:collapse;font-size:0.875rem;line-height:1.35;"
          "font-variant-numeric:tabular-nums;")
_TH = ("text-align:left;padding:6px 8px;border-bottom:2px solid rgba(128,128,128,0.40);"
       "font-weight:600;vertical-align:bottom;")
_TD = "padding:5px 8px;border-bottom:1px solid rgba(128,128,128,0.18);vertical-align:top;"
_NUM = "text-align:right;white-space:nowrap;"
_NOWRAP = "white-space:nowrap;"
_FAILED_ROW = "opacity:0.55;background:rgba(217,48,37,0.06);"
_HIGHLIGHT_ROW = "background:rgba(232,113,10,0.12);font-weight:600;"
_BADGE = ("display:inline-block;padding:1px 8px;border-radius:10px;font-size:0.78rem;font-weight:600;"
          "color:#fff;white-space:nowrap;letter-spacing:0.01em;")


def status_badge(status: Any) -> Raw:
    """OK green, Degraded orange, Failed red (with a warning sign)."""
    key = str(status) if status is not None else "unknown"
    colour = fmt.STATUS_COLOUR.get(key, fmt.UNKNOWN_COLOUR)
    icon = fmt.STATUS_ICON.get(key)
    label = fmt.status_label(status)
    body = f"{icon} {label}" if icon else label
    return Raw(f'<span class="calib-badge calib-badge-{html.escape(key)}" data-status="{html.escape(key)}" '
               f'style="{_BADGE}background:{colour};">{html.escape(body)}</span>')


def decision_badge(decision: Any) -> Raw:
    """Applied blue, Skipped grey: a policy decision, never confused with a status."""
    key = str(decision) if decision is not None else "none"
    if decision is None:
        return Raw(fmt.MISSING)
    colour = fmt.DECISION_COLOUR.get(key, fmt.UNKNOWN_COLOUR)
    return Raw(f'<span class="calib-decision" data-decision="{html.escape(key)}" '
               f'style="{_BADGE}background:{colour};">{html.escape(fmt.decision_label(decision))}</span>')


def run_line(run: Mapping[str, Any], label: str, chain_time: Any = None) -> str:
    """One line: status badge, `label`, run id and time (UTC); with `chain_time`, the data's time and age too.

    The run time alone hides a stale chain (a replay days old looked current).
    """
    chain = ""
    data_ts, run_ts = fmt.to_utc(chain_time), fmt.to_utc(run.get("created_at"))
    if data_ts is not None:
        age = f" (age {fmt.fmt_age(run_ts - data_ts)})" if run_ts is not None else ""
        chain = f' · <span class="calib-chain-time">chain {html.escape(fmt.fmt_ts(data_ts))} UTC{age}</span>'
    return (f'<div class="calib-run-line" style="display:flex;gap:0.6rem;align-items:center;flex-wrap:wrap;">'
            f"{status_badge(run.get('status'))}<span>{html.escape(label)} "
            f"<code>{html.escape(fmt.text(run.get('run_id')))}</code> · "
            f"run {html.escape(fmt.fmt_ts(run.get('created_at')))} UTC{chain}</span></div>")


def _cell(value: Any) -> str:
    return value if isinstance(value, Raw) else html.escape(fmt.text(value))


def html_table(
    frame: pl.DataFrame,
    *,
    table_id: str,
    numeric: Iterable[str] = (),
    nowrap: Iterable[str] = (),
    status_col: str | None = None,
    decision_col: str | None = None,
    dim_failed: bool = False,
    titles: Mapping[str, str] | None = None,
    raw: Iterable[str] = (),
) -> str:
    """A static HTML table of display strings.

    `status_col` / `decision_col` hold raw codes ("ok", "applied") rendered as
    badges. A hidden "_status" column sets each row's `data-status`; with
    `dim_failed`, failed rows are dimmed. A hidden "_highlight" column (bool)
    emphasises rows, a hidden "_title" column gives a row tooltip. `titles`
    adds header tooltips. Columns in `raw` hold HTML built (and escaped) by
    this module.
    """
    numeric, nowrap, titles, raw = set(numeric), set(nowrap), dict(titles or {}), set(raw)
    shown = [c for c in frame.columns if not c.startswith("_")]
    head = "".join(
        f'<th style="{_TH}{"text-align:right;" if c in numeric else ""}{_NOWRAP if len(c) <= 12 else ""}"'
        + (f' title="{html.escape(titles[c])}"' if c in titles else "")
        + f">{html.escape(c)}</th>"
        for c in shown
    )
    rows = []
    for rec in frame.iter_rows(named=True):
        status = rec.get("_status")
        classes = ["calib-row"]
        style = ""
        if status is not None:
            classes.append(f"calib-row-{html.escape(str(status))}")
            if dim_failed and status == "failed":
                style += _FAILED_ROW
        if rec.get("_highlight"):
            classes.append("calib-row-highlight")
            style += _HIGHLIGHT_ROW
        cells = []
        for c in shown:
            v = rec[c]
            if c == status_col:
                v = status_badge(v)
            elif c == decision_col:
                v = decision_badge(v)
            elif c in raw and v is not None:
                v = Raw(v)
            extra = _NUM if c in numeric else (_NOWRAP if c in nowrap else "")
            cells.append(f'<td style="{_TD}{extra}">{_cell(v)}</td>')
        attrs = f' data-status="{html.escape(str(status))}"' if status is not None else ""
        if rec.get("_run_id"):
            attrs += f' data-run-id="{html.escape(str(rec["_run_id"]))}"'
        if rec.get("_title"):
            attrs += f' title="{html.escape(str(rec["_title"]))}"'
        rows.append(f'<tr class="{" ".join(classes)}"{attrs} style="{style}">{"".join(cells)}</tr>')
    return (f'{_HINT}<div class="calib-table-wrap" style="{_WRAP}"><table class="calib-table" id="{html.escape(table_id)}" '
            f'data-table="{html.escape(table_id)}" style="{_TABLE}"><thead><tr>{head}</tr></thead>'
            f'<tbody>{"".join(rows)}</tbody></table></div>')


def kv_table(pairs: Sequence[tuple[str, Any]], *, table_id: str) -> str:
    """A two-column label/value card; values may be `Raw` HTML (badges)."""
    rows = "".join(
        f'<tr class="calib-kv" data-key="{html.escape(k)}"><th style="{_TD}font-weight:600;white-space:nowrap;'
        f'text-align:left;width:40%;opacity:0.8;">{html.escape(k)}</th>'
        f'<td style="{_TD}">{_cell(v)}</td></tr>'
        for k, v in pairs
    )
    return (f'<div class="calib-table-wrap" style="{_WRAP}"><table class="calib-table calib-kv-table" '
            f'id="{html.escape(table_id)}" data-table="{html.escape(table_id)}" style="{_TABLE}">'
            f"<tbody>{rows}</tbody></table></div>")


# --------------------------------------------------------------------------- sections


def _frame(rows: list[dict[str, Any]], columns: Sequence[str]) -> pl.DataFrame:
    return pl.DataFrame(rows, schema=dict.fromkeys(columns, pl.String)) if rows else pl.DataFrame(
        schema=dict.fromkeys(columns, pl.String))


def _str_or_none(x: Any) -> str | None:
    return None if x is None else str(x)


def _get(d: Mapping[str, Any] | None, *keys: str) -> Any:
    cur: Any = d
    for k in keys:
        if not isinstance(cur, Mapping):
            return None
        cur = cur.get(k)
    return cur


HISTORY_COLUMNS: tuple[str, ...] = (
    "Date (UTC)", "Status", "DTE Range (days)", "Lookback (days)", "Multiplier", "vMAE %", "MAE %",
    "Samples", "Reason", "_status", "_run_id",
)


def history_frame(runs: pl.DataFrame) -> pl.DataFrame:
    """Calibration History (Auto-Calibrate): one row per harvested run, newest window first.

    Date is the end of the calibrated window (`--as-of`), or the run time for
    rows recorded before windows were stored. Multiplier is the recommended one.
    """
    rows = []
    for r in runs.iter_rows(named=True):
        rows.append({
            "Date (UTC)": fmt.fmt_ts(r.get("window_end") or r.get("created_at")),
            "Status": _str_or_none(r.get("status")),
            "DTE Range (days)": fmt.fmt_range(r.get("dte_min"), r.get("dte_max")),
            "Lookback (days)": fmt.fmt_num(r.get("lookback_days")),
            "Multiplier": fmt.fmt_mult(r.get("recommended_multiplier")),
            "vMAE %": fmt.fmt_pct(r.get("vega_weighted_mae_pct")),
            "MAE %": fmt.fmt_pct(r.get("mae_pct")),
            "Samples": fmt.fmt_int(r.get("n_samples")),
            "Reason": fmt.text(r.get("reason")),
            "_status": _str_or_none(r.get("status")),
            "_run_id": _str_or_none(r.get("run_id")),
        })
    return _frame(rows, HISTORY_COLUMNS)


HISTORY_NUMERIC = ("Lookback (days)", "Multiplier", "vMAE %", "MAE %", "Samples")
HISTORY_TITLES = {
    "Date (UTC)": "End of the calibrated window (--as-of)",
    "Multiplier": "Recommended IV multiplier",
    "vMAE %": "Vega-weighted mean absolute price error at the recommended multiplier",
    "MAE %": "Mean absolute price error at the recommended multiplier",
}


LIVE_COLUMNS: tuple[str, ...] = (
    "Time (UTC)", "Status", "Chain", "Tested", "Recommended", "Smoothed", "vMAE %", "MAE %", "Samples",
    "Decision", "Policy reason", "_status", "_run_id",
)


def _chain(r: Mapping[str, Any]) -> str:
    """Where the chain came from, as HTML: "replay" with its snapshot time, or the Deribit API."""
    if r.get("replay"):
        at = fmt.fmt_ts(r.get("window_end"))
        if at == fmt.MISSING:
            return "replay"
        return f'replay <br><span style="white-space:nowrap;opacity:0.75;font-size:0.8rem;">{html.escape(at)}</span>'
    return "Deribit" if r.get("replay") is not None else fmt.MISSING


def live_runs_frame(runs: pl.DataFrame) -> pl.DataFrame:
    """Recent live runs with the policy's decision for each ("Chain" holds HTML: render it `raw`)."""
    rows = []
    for r in runs.iter_rows(named=True):
        rows.append({
            "Time (UTC)": fmt.fmt_ts(r.get("created_at")),
            "Status": _str_or_none(r.get("status")),
            "Chain": _chain(r),
            "Tested": fmt.fmt_mult(r.get("multiplier_tested")),
            "Recommended": fmt.fmt_mult(r.get("recommended_multiplier")),
            "Smoothed": fmt.fmt_mult(r.get("smoothed_multiplier")),
            "vMAE %": fmt.fmt_pct(r.get("vega_weighted_mae_pct")),
            "MAE %": fmt.fmt_pct(r.get("mae_pct")),
            "Samples": fmt.fmt_int(r.get("n_samples")),
            "Decision": _str_or_none(r.get("policy_decision") or ("applied" if r.get("applied") else None)),
            "Policy reason": fmt.text(r.get("policy_reason")),
            "_status": _str_or_none(r.get("status")),
            "_run_id": _str_or_none(r.get("run_id")),
        })
    return _frame(rows, LIVE_COLUMNS)


LIVE_RAW = ("Chain",)
LIVE_NUMERIC = ("Tested", "Recommended", "Smoothed", "vMAE %", "MAE %", "Samples")
LIVE_TITLES = {
    "Tested": "Multiplier the run was scored at (the applied global multiplier then)",
    "Smoothed": "Recommendation after EWMA smoothing, clamps and max step: what the policy would apply",
    "vMAE %": "Vega-weighted MAE at the recommended multiplier",
}


@dataclass(frozen=True, slots=True, kw_only=True)
class Metric:
    label: str
    value: str
    delta: str | None = None
    help: str | None = None


def live_metrics(run: Mapping[str, Any], result: Mapping[str, Any]) -> list[Metric]:
    """Headline numbers of the latest live run: the model as run today vs Deribit marks."""
    gm = result.get("global_metrics") or {}
    tested = gm.get("tested") or {}
    m_tested = gm.get("multiplier_tested", run.get("multiplier_tested"))
    m_rec = gm.get("recommended_iv_multiplier", run.get("recommended_multiplier"))
    rec_v, tested_v = fmt.as_number(m_rec), fmt.as_number(m_tested)
    delta = fmt.fmt_signed(rec_v - tested_v) if rec_v is not None and tested_v is not None else None
    ratio = gm.get("iv_rv_ratio")
    return [
        Metric(label="Multiplier tested", value=fmt.fmt_mult(m_tested),
               help="The applied global multiplier this live run was scored at"),
        Metric(label="MAE %", value=fmt.fmt_pct(tested.get("mae_pct"), unit=True),
               help="Mean absolute price error vs Deribit marks at the tested multiplier"),
        Metric(label="vMAE %", value=fmt.fmt_pct(tested.get("vega_weighted_mae_pct"), unit=True),
               help="Vega-weighted MAE at the tested multiplier"),
        Metric(label="Bias %", value=fmt.fmt_pct(tested.get("bias_pct"), unit=True),
               help="Mean signed price error at the tested multiplier (negative: model too cheap)"),
        Metric(label="Recommended multiplier", value=fmt.fmt_mult(m_rec),
               delta=delta, help="Fitted together with the recommended skew; change vs the tested multiplier"),
        Metric(label="Current-skew multiplier", value=fmt.fmt_mult(gm.get("recommended_iv_multiplier_current_skew")),
               help="Fitted with your current skew: the value the update policy smooths and applies "
                    "until you change the skew"),
        Metric(label="RV_7d", value=fmt.fmt_pct(gm.get("rv_7d_pct", run.get("rv_7d_pct")), unit=True),
               help="Trailing 7-day realized vol of the index, annualized"),
        Metric(label="ATM IV", value=fmt.fmt_pct(gm.get("atm_iv_pct", run.get("atm_iv_pct")), unit=True),
               help="Market at-the-money implied vol"),
        Metric(label="IV / RV", value=fmt.fmt_mult(ratio), help="ATM IV over RV_7d: the multiplier the ATM market implies"),
        Metric(label="Samples", value=fmt.fmt_int(result.get("n_samples", run.get("n_samples"))),
               help="Quotes used in the global fit"),
    ]


ERROR_COLUMNS = ("Multiplier", "Value", "MAE %", "vMAE %", "Bias %", "MAE (vol pts)")


def error_compare_frame(result: Mapping[str, Any]) -> pl.DataFrame:
    """Errors at the tested multiplier (today's model) and at the recommended one."""
    gm = result.get("global_metrics") or {}
    tested = gm.get("tested") or {}
    rows = [
        {"Multiplier": "Tested (current skew)", "Value": fmt.fmt_mult(gm.get("multiplier_tested")),
         "MAE %": fmt.fmt_pct(tested.get("mae_pct")), "vMAE %": fmt.fmt_pct(tested.get("vega_weighted_mae_pct")),
         "Bias %": fmt.fmt_pct(tested.get("bias_pct")), "MAE (vol pts)": fmt.fmt_pct(tested.get("mae_vol_points"))},
        {"Multiplier": "Recommended (fitted skew)", "Value": fmt.fmt_mult(gm.get("recommended_iv_multiplier")),
         "MAE %": fmt.fmt_pct(gm.get("mae_pct")), "vMAE %": fmt.fmt_pct(gm.get("vega_weighted_mae_pct")),
         "Bias %": fmt.fmt_pct(gm.get("bias_pct")), "MAE (vol pts)": fmt.fmt_pct(gm.get("mae_vol_points"))},
    ]
    return _frame(rows, ERROR_COLUMNS)


OPTION_TYPE_COLUMNS = ("Type", "Samples", "MAE %", "vMAE %", "Bias %", "MAE (vol pts)")
_TYPE_NAMES = {"C": "Calls", "P": "Puts"}


def option_type_frame(result: Mapping[str, Any]) -> pl.DataFrame:
    """Errors by option type at the recommended multiplier."""
    rows = [
        {"Type": _TYPE_NAMES.get(str(o.get("option_type")), fmt.text(o.get("option_type"))),
         "Samples": fmt.fmt_int(o.get("n_samples")), "MAE %": fmt.fmt_pct(o.get("mae_pct")),
         "vMAE %": fmt.fmt_pct(o.get("vega_weighted_mae_pct")), "Bias %": fmt.fmt_pct(o.get("bias_pct")),
         "MAE (vol pts)": fmt.fmt_pct(o.get("mae_vol_points"))}
        for o in result.get("option_type_metrics") or []
        if isinstance(o, Mapping)
    ]
    return _frame(rows, OPTION_TYPE_COLUMNS)


TERM_COLUMNS = ("Bucket", "DTE Range (days)", "Samples", "MAE %", "vMAE %", "Bias %", "Rec. IV Mult",
                "vMAE % at tested", "Guard", "_highlight")
# A band's guardrail verdict (BandMetrics.status): only "ok" bands are ever applied.
BAND_GUARD_LABELS = {"ok": "ok", "too_few_samples": "too few samples: not applied", "failed": "failed"}


def term_structure_frame(result: Mapping[str, Any]) -> pl.DataFrame:
    """Global fit range first, then each DTE band at its own recommended multiplier."""
    gm = result.get("global_metrics") or {}
    rows: list[dict[str, Any]] = []
    if gm:
        rows.append({
            "Bucket": "Global fit", "DTE Range (days)": fmt.fmt_range(result.get("dte_min"), result.get("dte_max")),
            "Samples": fmt.fmt_int(result.get("n_samples")), "MAE %": fmt.fmt_pct(gm.get("mae_pct")),
            "vMAE %": fmt.fmt_pct(gm.get("vega_weighted_mae_pct")), "Bias %": fmt.fmt_pct(gm.get("bias_pct")),
            "Rec. IV Mult": fmt.fmt_mult(gm.get("recommended_iv_multiplier"))
            + (" (at bound)" if gm.get("at_bound") else ""),
            "vMAE % at tested": fmt.fmt_pct(_get(gm, "tested", "vega_weighted_mae_pct")),
            "Guard": fmt.MISSING,
            "_highlight": "1",
        })
    for b in result.get("bands") or []:
        if not isinstance(b, Mapping):
            continue
        rows.append({
            "Bucket": str(b.get("name", "")).title() or fmt.MISSING,
            "DTE Range (days)": fmt.fmt_range(b.get("dte_min"), b.get("dte_max")),
            "Samples": fmt.fmt_int(b.get("n_samples")), "MAE %": fmt.fmt_pct(b.get("mae_pct")),
            "vMAE %": fmt.fmt_pct(b.get("vega_weighted_mae_pct")), "Bias %": fmt.fmt_pct(b.get("bias_pct")),
            "Rec. IV Mult": fmt.fmt_mult(b.get("recommended_iv_multiplier"))
            + (" (at bound)" if b.get("at_bound") else ""),
            "vMAE % at tested": fmt.fmt_pct(_get(b, "tested", "vega_weighted_mae_pct")),
            "Guard": BAND_GUARD_LABELS.get(str(b.get("status", "ok")), fmt.text(b.get("status"))),
            "_highlight": None,
        })
    return _frame(rows, TERM_COLUMNS)


TERM_NUMERIC = ("Samples", "MAE %", "vMAE %", "Bias %", "Rec. IV Mult", "vMAE % at tested")
TERM_TITLES = {
    "MAE %": "At the bucket's recommended multiplier",
    "vMAE %": "Vega-weighted MAE at the bucket's recommended multiplier",
    "vMAE % at tested": "Vega-weighted MAE of today's model (tested multiplier, current skew)",
    "Guard": "Band guardrail: a band with too few samples is never applied; one out of range fails the run",
}

SKEW_COLUMNS = ("Anchor z", "Current ratio", "Recommended ratio", "Diff", "Quotes", "_highlight")


@dataclass(frozen=True, slots=True, kw_only=True)
class SkewSummary:
    misfit: str
    max_abs_diff: str
    largest_diff_anchor: str
    available: bool


def skew_summary(result: Mapping[str, Any]) -> SkewSummary:
    sk = result.get("skew") or {}
    return SkewSummary(misfit=fmt.fmt_mult(sk.get("misfit")), max_abs_diff=fmt.fmt_mult(sk.get("max_abs_diff")),
                       largest_diff_anchor=fmt.fmt_signed(sk.get("largest_diff_anchor"), 1)
                       if sk.get("largest_diff_anchor") is not None else fmt.MISSING,
                       available=bool(sk.get("anchors")))


def skew_frame(result: Mapping[str, Any]) -> pl.DataFrame:
    """Current vs recommended ratio to ATM vol at each anchor; the largest difference highlighted."""
    sk = result.get("skew") or {}
    anchors = sk.get("anchors") or []
    current = sk.get("current") or []
    rec = sk.get("recommended") or []
    counts = sk.get("n_per_anchor") or []
    largest = sk.get("largest_diff_anchor")
    rows = []
    for i, z in enumerate(anchors):
        c = current[i] if i < len(current) else None
        r = rec[i] if i < len(rec) else None
        diff = (r - c) if isinstance(r, int | float) and isinstance(c, int | float) else None
        rows.append({
            "Anchor z": fmt.fmt_signed(z, 1) if z else "0 (ATM)",
            "Current ratio": fmt.fmt_mult(c), "Recommended ratio": fmt.fmt_mult(r),
            "Diff": fmt.fmt_signed(diff), "Quotes": fmt.fmt_int(counts[i] if i < len(counts) else None),
            "_highlight": "1" if largest is not None and z == largest else None,
        })
    return _frame(rows, SKEW_COLUMNS)


SKEW_NUMERIC = ("Anchor z", "Current ratio", "Recommended ratio", "Diff", "Quotes")

def policy_frame(policy: PolicyConfig) -> pl.DataFrame:
    """The update policy in force, as one row (meanings in `policy_titles`)."""
    row = {
        "EWMA weight": f"{policy.ewma_alpha:.2f}",
        "Deadband": fmt.fmt_mult(policy.deadband),
        "Max step": fmt.fmt_mult(policy.max_step),
        "Cooldown (min)": f"{policy.cooldown_minutes:g}",
        "Min samples": fmt.fmt_int(policy.min_samples),
        "Max vMAE %": fmt.fmt_pct(policy.max_vega_mae_pct),
        "Multiplier range": f"{policy.min_multiplier:.4f} – {policy.max_multiplier:.4f}",
    }
    return _frame([row], list(row))


POLICY_TITLES = {
    "EWMA weight": "Weight of the newest live recommendation in the smoothing",
    "Deadband": "Skip a change smaller than this",
    "Max step": "Largest change of a multiplier per apply",
    "Cooldown (min)": "Minimum time between two applies",
    "Min samples": "Skip live runs with fewer quotes",
    "Max vMAE %": "Skip live runs that fit worse than this",
    "Multiplier range": "Smoothed values are clamped to this range",
}


def latest_run_pairs(run: Mapping[str, Any]) -> list[tuple[str, Any]]:
    """Latest Calibration Run card of the policy section."""
    source = fmt.text(run.get("source"))
    if run.get("replay"):
        source += " (replay)"
    n = fmt.fmt_int(run.get("n_samples"))
    return [
        ("Run", fmt.text(run.get("run_id"))),
        ("Time (UTC)", fmt.fmt_ts(run.get("created_at"))),
        ("Source", source),
        ("Status", status_badge(run.get("status"))),
        ("Recommended", fmt.fmt_mult(run.get("recommended_multiplier"))),
        ("Smoothed", fmt.fmt_mult(run.get("smoothed_multiplier"))),
        ("Decision", decision_badge(run.get("policy_decision") or ("applied" if run.get("applied") else None))),
        ("Reason", fmt.text(run.get("policy_reason") or run.get("reason"))),
        ("Samples", n),
    ]


APPLIED_COLUMNS = ("Scope", "Multiplier", "Last updated (UTC)", "_title", "_run_id")


def applied_frame(applied: pl.DataFrame) -> pl.DataFrame:
    """Current applied multipliers, global first, each with its own last-updated time."""
    rows = [
        {"Scope": str(r.get("scope", "")).title(), "Multiplier": fmt.fmt_mult(r.get("multiplier")),
         "Last updated (UTC)": fmt.fmt_ts(r.get("updated_at"), seconds=True),
         "_title": f"run {fmt.text(r.get('run_id'))}", "_run_id": _str_or_none(r.get("run_id"))}
        for r in applied.iter_rows(named=True)
    ]
    return _frame(rows, APPLIED_COLUMNS)


def run_options(live_runs: pl.DataFrame, history: pl.DataFrame) -> list[tuple[str, str]]:
    """(run_id, label) of recent runs for the detail selector, newest first, latest live run first."""
    items = []
    for source, frame in (("live", live_runs), ("auto", history)):
        for r in frame.iter_rows(named=True):
            ts = fmt.to_utc(r.get("created_at"))
            when = fmt.fmt_ts(r.get("window_end") if source == "auto" else r.get("created_at"))
            label = f"{source} · {when} · {fmt.status_label(r.get('status'))}"
            items.append((ts, str(r["run_id"]), label, source))
    items.sort(key=lambda t: (t[0] is not None, t[0]), reverse=True)
    live_first = [i for i in items if i[3] == "live"][:1]
    rest = [i for i in items if i not in live_first]
    return [(i[1], i[2]) for i in live_first + rest]


@dataclass(frozen=True, slots=True)
class ScopeChange:
    scope: str
    old: float | None  # None: nothing applied for this scope yet
    new: float


def force_apply_changes(applied: pl.DataFrame, run: dict[str, Any], result: dict[str, Any]) -> list[ScopeChange]:
    """What Force-Apply of `run` writes: each scope's applied value now -> the run's smoothed value.

    Global first, then the bands in their stored order; the values are the ones
    `force_apply_latest` writes (its smoothed global and non-null smoothed bands).
    """
    new: dict[str, float] = {}
    g = fmt.as_number(run.get("smoothed_multiplier"))
    if g is not None:
        new["global"] = g
    bands = ((result.get("policy") or {}).get("smoothed_bands") or {}) if isinstance(result, dict) else {}
    new.update({str(k): float(v) for k, v in bands.items() if fmt.as_number(v) is not None})
    old = {str(r["scope"]): fmt.as_number(r.get("multiplier")) for r in applied.iter_rows(named=True)} \
        if applied.height else {}
    return [ScopeChange(scope=k, old=old.get(k), new=v) for k, v in new.items()]


def force_apply_text(changes: list[ScopeChange]) -> str:
    """"Global 1.0367 → 1.0671, Weekly (none) → 1.0500, ..." for the confirmation."""
    return ", ".join(f"{c.scope.title()} {fmt.fmt_mult(c.old) if c.old is not None else '(none)'} → "
                     f"**{fmt.fmt_mult(c.new)}**" for c in changes)


# --------------------------------------------------------------------------- static arbitrage

ARBITRAGE_COLUMNS = ("Surface", "Points checked", "Butterfly", "Calendar", "First violation", "Worst violation")
ARBITRAGE_TITLES = {
    "Points checked": "Grid points (listed expiry x strike) where the surface was evaluated",
    "Butterfly": "Points where call prices are not convex or rise with strike (beyond 1e-6 of the forward)",
    "Calendar": "Points where total variance falls from one listed expiry to the next at the same ln(K/F)",
}


def _violation_text(v: Mapping[str, Any] | None) -> str:
    if not v:
        return fmt.MISSING
    what = "calendar" if v.get("kind") == "calendar" else "butterfly"
    where = f"{what} · {v.get('expiry')} ({float(v.get('dte_days') or 0):.1f} d) · K/F {float(v['strike_rel']):.4f}"
    if v.get("kind") == "calendar" and v.get("next_expiry"):
        where += f" vs {v['next_expiry']}"
    return where


def arbitrage_frame(result: Mapping[str, Any]) -> pl.DataFrame:
    """Recommended surface, current surface and the marks: counts and the first and worst violation."""
    a = result.get("arbitrage")
    if not isinstance(a, Mapping):
        return _frame([], ARBITRAGE_COLUMNS)
    rows = []
    for label, part in (("Recommended surface", a), ("Current surface", a.get("current")),
                        ("Market marks", a.get("market"))):
        if not isinstance(part, Mapping):
            continue
        bad = (part.get("butterfly_violations") or 0) + (part.get("calendar_violations") or 0)
        rows.append({"Surface": label, "Points checked": f"{part.get('checked_points') or 0:,}",
                     "Butterfly": f"{part.get('butterfly_violations') or 0:,}",
                     "Calendar": f"{part.get('calendar_violations') or 0:,}",
                     "First violation": _violation_text(part.get("first")),
                     "Worst violation": _violation_text(part.get("worst")),
                     "_status": ("degraded" if bad else "ok") if label != "Market marks" else None,
                     "_highlight": bool(bad) and label == "Recommended surface"})
    return pl.DataFrame(rows, schema={**dict.fromkeys(ARBITRAGE_COLUMNS, pl.String), "_status": pl.String,
                                      "_highlight": pl.Boolean})

"""calib dashboard: `streamlit run app.py`.

Thin rendering over `calib.queries` for the history file in env `CALIB_DB`
(default data/calibration.duckdb), one `render_*` function per section in
SPEC section 8 order. Reads use short read-only connections; their results
are cached (shared by all browser sessions) under the file's change marker
(`calib.queries.change_marker`, one cheap read per page run), so any page
load after a write, from the CLI or any session, reads the new state. The
only write is Force-Apply Latest, which calls `calib.live.force_apply_latest`.
"""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any

import polars as pl
import streamlit as st

from calib import queries
from calib._typing import UNDERLYINGS
from calib.config import DEFAULT_DB, Settings, config_path, history_path, load_settings
from calib.errors import CalibError, StoreLockedError
from calib.live import force_apply_latest
from calib.live_outage import live_feed_outage
from calib.ui import charts, tables
from calib.ui import format as fmt

CACHE_TTL_S = 30
HISTORY_LIMIT = 50
LIVE_LIMIT = 20
HISTORY_EXPLANATION = (
    "Auto-calibrations use harvested Deribit data and the same calibration engine as the live UI. "
    "Each run is scored as OK, Degraded, or Failed based on data quality, error magnitude, and "
    "multiplier sanity. Failed runs are recorded for debugging only and are not used to update the "
    "vol surface."
)


# --------------------------------------------------------------------------- data (cached)


# Every cached read is keyed on `marker`, the file's change marker: a write anywhere changes it, so a
# cached value is only ever reused for the file state it was read from (the TTL just bounds memory).
Marker = tuple[Any, ...]


@st.cache_data(ttl=CACHE_TTL_S, show_spinner=False)
def load_dashboard(db: str, underlying: str, marker: Marker) -> queries.DashboardData:
    """All sections' data; `marker` is part of the cache key only."""
    return queries.dashboard_data(Path(db), underlying, history_limit=HISTORY_LIMIT, live_limit=LIVE_LIMIT)


@st.cache_data(ttl=CACHE_TTL_S, show_spinner=False)
def load_run(db: str, underlying: str, run_id: str, marker: Marker) -> queries.RunDetail | None:
    return queries.run_detail(Path(db), underlying, run_id)


@st.cache_data(ttl=CACHE_TTL_S, show_spinner=False)
def load_backtest(db: str, underlying: str, marker: Marker) -> tuple[dict[str, Any], Any] | None:
    from calib.store.backtests import newest_backtest

    return newest_backtest(Path(db), underlying)


@st.cache_data(ttl=CACHE_TTL_S, show_spinner=False)
def load_policy_settings(path: str, stamp: tuple[int, int] | None, refresh: int) -> Settings:
    """The settings file, cached per (path, modification time and size) so an edit shows at once."""
    return load_settings(Path(path))


def file_stamp(path: Path) -> tuple[int, int] | None:
    try:
        st_ = path.stat()
    except OSError:
        return None
    return st_.st_mtime_ns, st_.st_size


def db_path() -> Path:
    return history_path()


def bump_refresh() -> None:
    st.session_state["refresh"] = st.session_state.get("refresh", 0) + 1


def show_html(body: str) -> None:
    st.html(body)


def db_flag(db: Path) -> str:
    return "" if db == DEFAULT_DB else f" --db {shlex.quote(str(db))}"


def commands(db: Path, underlying: str, *, live: bool = True, auto: bool = True, demo: bool = False) -> str:
    flag = db_flag(db)
    lines = []
    if demo:
        lines.append(f"calib demo-db{flag}    # a populated demo history in one step")
    if auto:
        lines.append(f"calib auto-calibrate --underlying {underlying} --data-dir data/live_deribit{flag}")
    if live:
        lines.append(f"calib calibrate-live --underlying {underlying} --replay data/live_deribit{flag}")
    return "\n".join(lines)


# --------------------------------------------------------------------------- sections


def render_sidebar(db: Path) -> str:
    st.sidebar.title("calib")
    st.sidebar.caption("Synthetic vol model: RV_7d × multiplier × skew, calibrated against Deribit marks.")
    underlying = st.sidebar.selectbox("Underlying", UNDERLYINGS, key="underlying")
    st.sidebar.button("Refresh", key="refresh_button", on_click=bump_refresh, icon=":material/refresh:",
                      width="stretch", help="Re-read the history file now (any write to it is shown on the next page load anyway)")
    st.sidebar.caption(f"History file: `{db}`")
    return str(underlying)


def render_empty_state(db: Path, data: queries.DashboardData) -> bool:
    """Guidance instead of sections when there is nothing to show; True when sections follow."""
    info, und = data.info, data.underlying
    if not info.exists:
        st.info(f"No history file at `{db}` yet. Record a calibration run first, or build a demo history:",
                icon=":material/database:")
        st.code(commands(db, und, demo=True), language="bash")
        st.caption("The app reads the file named by the environment variable CALIB_DB "
                   "(default data/calibration.duckdb); run e.g. `CALIB_DB=path/to/file.duckdb streamlit run app.py`.")
        return False
    if not info.initialized or info.n_runs == 0:
        st.info(f"The history file `{db}` has no calibration runs yet. Record one:", icon=":material/database:")
        st.code(commands(db, und, demo=True), language="bash")
        return False
    if info.count(und) == 0:
        others = ", ".join(f"{u} ({info.count(u)} runs)" for u in info.runs)
        st.info(f"No calibration runs for {und} yet" + (f"; this file has {others}." if others else ".")
                + f" Record a run for {und}:", icon=":material/database:")
        st.code(commands(db, und), language="bash")
        return False
    return True


def run_caption(run: dict[str, Any]) -> str:
    source = "live" + (" (replay)" if run.get("replay") else "") if run.get("source") == "live" else "auto-calibrate"
    return f"Run `{run.get('run_id')}` · {source} · {fmt.fmt_ts(run.get('created_at'))} UTC"


def render_live_summary(db: Path, data: queries.DashboardData) -> None:
    st.header("Calibration vs Deribit", anchor="calibration-vs-deribit")
    latest = data.latest_live
    if latest is None:
        st.info(f"No live runs for {data.underlying} yet: score the current chain with", icon=":material/info:")
        st.code(commands(db, data.underlying, auto=False), language="bash")
        return
    run, result = latest.run, latest.result
    show_html(tables.run_line(run, "Latest live run", chain_time=(result.get("window") or {}).get("newest_snapshot")))
    outage = live_feed_outage(data.live_runs)
    if outage is not None:
        last = fmt.fmt_ts(outage.last_reached) + " UTC" if outage.last_reached is not None else "none recorded"
        st.error(f"**Live feed down** since {fmt.fmt_ts(outage.since)} UTC ({outage.failed_runs} failed live "
                 f"run(s)); last live run that reached Deribit: {last}. {outage.reason}", icon=":material/cloud_off:")
        return
    if run.get("status") == "failed":
        st.warning(f"The latest live run failed: {run.get('reason')}. It is recorded for debugging and never applied.",
                   icon=":material/warning:")
    metrics = tables.live_metrics(run, result)
    for chunk in (metrics[:5], metrics[5:]):
        cols = st.columns(5)
        for col, m in zip(cols, chunk, strict=False):
            col.metric(m.label, m.value, delta=m.delta, delta_color="off", help=m.help)
    st.caption("MAE, vMAE and bias are at the tested multiplier with the current skew (the model as run today).")
    show_html(tables.html_table(tables.error_compare_frame(result), table_id="live-errors",
                                numeric=tables.ERROR_COLUMNS[1:]))
    issues = [i for i in (result.get("data_quality") or {}).get("issues") or []
              if isinstance(i, dict) and i.get("severity") in ("warning", "error")]
    if issues:
        st.caption("Data quality: " + "; ".join(f"{i.get('code')}: {i.get('message')}" for i in issues))


def choose_detail_run(db: Path, data: queries.DashboardData, marker: Marker) -> queries.RunDetail | None:
    options = tables.run_options(data.live_runs, data.auto_history)
    if not options:
        return None
    labels = dict(options)
    run_id = st.sidebar.selectbox("Run in the detail sections", [o[0] for o in options],
                                  format_func=lambda r: labels[r],
                                  help="Option-type metrics, Term Structure and Skew Fit show this run "
                                       "(default: the latest live run).")
    if data.latest_live is not None and run_id == data.latest_live.run.get("run_id"):
        return data.latest_live
    return load_run(str(db), data.underlying, run_id, marker)


def render_option_types(detail: queries.RunDetail | None) -> None:
    st.subheader("Option-type metrics", anchor="option-type-metrics")
    if detail is None:
        st.info("No run to show.")
        return
    st.caption(run_caption(detail.run) + " · errors at the recommended multiplier")
    frame = tables.option_type_frame(detail.result)
    if frame.height == 0:
        st.info("This run has no option-type metrics.")
        return
    show_html(tables.html_table(frame, table_id="option-types", numeric=tables.OPTION_TYPE_COLUMNS[1:]))


def render_arbitrage(detail: queries.RunDetail | None) -> None:
    st.subheader("Static arbitrage", anchor="static-arbitrage")
    if detail is None:
        st.info("No run to show.")
        return
    frame = tables.arbitrage_frame(detail.result)
    if frame.height == 0:
        st.info("This run has no arbitrage check (it predates it, or no chain was usable).")
        return
    show_html(tables.html_table(frame, table_id="arbitrage", numeric=("Points checked", "Butterfly", "Calendar"),
                                status_col=None, titles=tables.ARBITRAGE_TITLES))
    st.caption("Newest snapshot of the run, every listed expiry. Butterfly: call prices convex and falling in strike "
               "on 41 strikes between the skew's outer anchors; calendar: total variance rising with expiry at the "
               "same ln(K/F). Any violation on the recommended surface makes the run Degraded. Crossed marks are "
               "a data-quality count (a few are normal).")


def render_term_structure(detail: queries.RunDetail | None) -> None:
    st.header("Term Structure", anchor="term-structure")
    if detail is None:
        st.info("No run to show.")
        return
    st.caption(run_caption(detail.run) + " · each DTE bucket fitted with its own multiplier")
    frame = tables.term_structure_frame(detail.result)
    if frame.height == 0:
        st.info("This run has no DTE buckets (nothing usable was found).")
    else:
        show_html(tables.html_table(frame, table_id="term-structure", numeric=tables.TERM_NUMERIC,
                                    titles=tables.TERM_TITLES))
    st.subheader("ATM term structure by listed expiry", anchor="atm-term-structure")
    if charts.term_frame(detail.result).height == 0:
        st.info("This run has no per-expiry data (it predates it, or no chain was usable).")
    else:
        left, right = st.columns(2)
        left.altair_chart(charts.term_structure_chart(detail.result), width="stretch")
        right.altair_chart(charts.multiplier_term_chart(detail.result), width="stretch")
        st.caption("Newest snapshot: market ATM IV interpolated at K = F per expiry; the model at the tested "
                   "multiplier with the current skew, and at each band's recommended multiplier with the "
                   "recommended skew (right: the multiplier each expiry is priced with).")
    render_error_map(detail)


def render_error_map(detail: queries.RunDetail) -> None:
    st.subheader("Error map by DTE and moneyness", anchor="error-map")
    if charts.error_map_frame(detail.result).height == 0:
        st.info("This run has no error map (it predates it, or nothing was scored).")
        return
    row = st.container(horizontal=True)
    measure = row.segmented_control("Error (|x|: absolute)", list(charts.ERROR_MEASURES), default="Vol pts",
                                    key="error_map_measure") or "Vol pts"
    model = row.segmented_control("Model", ["Recommended", "Current"], default="Recommended",
                                  key="error_map_model") or "Recommended"
    st.altair_chart(charts.error_map_chart(detail.result, measure, tested=model == "Current"), width="stretch")
    st.caption("Every scored quote of the run: mean model − market error per cell (small figure: quotes). "
               "Recommended: each band's multiplier with the recommended skew; Current: the tested multiplier "
               "with the current skew. z = ln(K/F) / (RV_7d · m · √T), one bucket per skew anchor.")


def render_skew(detail: queries.RunDetail | None) -> None:
    st.header("Skew Fit Analysis", anchor="skew-fit-analysis")
    if detail is None:
        st.info("No run to show.")
        return
    st.caption(run_caption(detail.run))
    summary = tables.skew_summary(detail.result)
    if not summary.available:
        st.info("No skew fit for this run (it failed, or too few quotes were usable).")
        return
    c1, c2, c3 = st.columns(3)
    c1.metric("Skew misfit (RMS)", summary.misfit, help="RMS of recommended - current ratio over anchors with data")
    c2.metric("Max |diff|", summary.max_abs_diff, help="Largest |recommended - current| ratio")
    c3.metric("At anchor z", summary.largest_diff_anchor, help="Where the largest difference sits")
    left, right = st.columns([1.1, 1.2])
    with left:
        st.markdown("**Anchor ratios to ATM vol**")
        show_html(tables.html_table(tables.skew_frame(detail.result), table_id="skew-anchors",
                                    numeric=tables.SKEW_NUMERIC))
    with right:
        st.markdown("**Current vs recommended skew**")
        st.altair_chart(charts.skew_chart(detail.result), width="stretch")
    st.markdown("**Smile: market IV vs model IV by moneyness**")
    if charts.smile_frame(detail.result).height == 0:
        st.info("No smile data for this run.")
    else:
        st.altair_chart(charts.smile_chart(detail.result), width="stretch")
        st.caption("Mean mark IV per z bin of the newest snapshot; models at the recommended multiplier.")
    render_expiry_smile(detail)


def render_expiry_smile(detail: queries.RunDetail) -> None:
    st.subheader("Smile per expiry", anchor="smile-per-expiry")
    labels, default = charts.expiry_options(detail.result)
    if not labels:
        st.info("This run has no per-expiry smiles (it predates them, or no chain was usable).")
        return
    choice = st.selectbox("Expiry", range(len(labels)), index=default, format_func=lambda i: labels[i],
                          key=f"smile_expiry_{detail.run.get('run_id')}",
                          help="Listed expiries of the run's newest snapshot (default: the nearest in its DTE range)")
    left, right = st.columns(2)
    left.altair_chart(charts.smile_expiry_chart(detail.result, int(choice), by="strike_rel"), width="stretch")
    right.altair_chart(charts.smile_expiry_chart(detail.result, int(choice), by="z"), width="stretch")
    st.caption("Mark IV per strike (call and put averaged) against the model at the tested multiplier with the "
               "current skew and at the expiry's band multiplier with the recommended skew.")


def render_force_apply(db: Path, data: queries.DashboardData) -> None:
    latest = data.latest_live
    run = latest.run if latest else {}
    blocked = None
    if latest is None:
        blocked = "No live run to apply."
    elif run.get("status") == "failed":
        blocked = "The latest live run failed; Force-Apply refuses failed runs."
    elif run.get("smoothed_multiplier") is None:
        blocked = "The latest live run has no smoothed multiplier to apply."
    elif run.get("applied"):
        blocked = "The latest live run is already applied."
    st.button("Force-Apply Latest", key="force_apply", type="primary", disabled=blocked is not None,
              on_click=lambda: st.session_state.update(confirm_force=True),
              help="Apply the newest live run's smoothed multipliers now, overriding the update policy")
    if blocked:
        st.caption(blocked)
        st.session_state["confirm_force"] = False
        return
    if not st.session_state.get("confirm_force"):
        return
    run_id = str(run.get("run_id"))
    changes = tables.force_apply_changes(data.applied, run, latest.result if latest else {})
    st.warning(f"Apply run `{run_id}` now? {tables.force_apply_text(changes)}, reason “Forced by user”. "
               "This overrides the update policy.", icon=":material/warning:")
    row = st.container(horizontal=True)
    if row.button("Confirm Force-Apply", key="force_apply_confirm", type="primary"):
        st.session_state["confirm_force"] = False
        if queries.latest_live_run_id(db, data.underlying) != run_id:
            st.session_state["flash"] = ("error", "A newer live run arrived since this page loaded; "
                                                  "review it and confirm again.")
        else:
            try:
                res = force_apply_latest(db, data.underlying)
            except CalibError as e:
                st.session_state["flash"] = ("error", f"Force-Apply failed: {e}")
            else:
                st.session_state["flash"] = ("success", f"Applied run {res.run_id}: global {res.multiplier:.4f} "
                                                        "(Forced by user).")
        bump_refresh()
        st.rerun()
    if row.button("Cancel", key="force_apply_cancel"):
        st.session_state["confirm_force"] = False
        st.rerun()


def render_policy(db: Path, data: queries.DashboardData, settings: Settings | None, settings_error: str | None) -> None:
    st.header("IV Calibration Update Policy", anchor="iv-calibration-update-policy")
    flash = st.session_state.pop("flash", None)
    if flash:
        (st.success if flash[0] == "success" else st.error)(flash[1])
    st.subheader("Policy settings in force")
    if settings is None:
        st.error(f"Cannot read the settings file: {settings_error}")
    else:
        show_html(tables.html_table(tables.policy_frame(settings.policy), table_id="policy-settings",
                                    titles=tables.POLICY_TITLES))
        st.caption(f"From {settings.source_path}." if settings.source_path else
                   "Built-in defaults (no calib.toml; set CALIB_CONFIG to use another file). "
                   "Hover a setting for its meaning.")
    left, right = st.columns(2, gap="large")
    with left:
        st.subheader("Latest Calibration Run")
        if data.latest_live is None:
            st.info(f"No live runs for {data.underlying} yet.")
        else:
            show_html(tables.kv_table(tables.latest_run_pairs(data.latest_live.run), table_id="latest-run"))
    with right:
        st.subheader("Current Applied Multipliers")
        if data.applied.height == 0:
            st.info(f"Nothing applied for {data.underlying} yet: the engine uses 1.0000 until a live run is applied.")
        else:
            show_html(tables.html_table(tables.applied_frame(data.applied), table_id="applied-multipliers",
                                        numeric=("Multiplier",), nowrap=("Last updated (UTC)",)))
            run_ids = list(dict.fromkeys(data.applied["run_id"].drop_nulls().to_list()))
            st.caption("What the synthetic engine uses now (from `current_applied_multipliers`); set by "
                       + ", ".join(f"`{r}`" for r in run_ids) + ".")
        render_force_apply(db, data)


def render_history(data: queries.DashboardData, settings: Settings | None) -> None:
    st.header("Calibration History (Auto-Calibrate)", anchor="calibration-history")
    st.info(HISTORY_EXPLANATION, icon=":material/info:")
    runs = data.auto_history
    if runs.height == 0:
        st.info(f"No auto-calibrations for {data.underlying} yet: run")
        st.code(f"calib auto-calibrate --underlying {data.underlying} --data-dir data/live_deribit", language="bash")
        return
    counts = runs["status"].value_counts()
    by = {s: n for s, n in counts.iter_rows()}
    st.caption(("Latest run: " if runs.height == 1 else f"Latest {runs.height} runs: ") + " · ".join(
        f"{by.get(s, 0)} {fmt.STATUS_LABEL[s]}" for s in ("ok", "degraded", "failed")))
    bounds = (settings.realism.min_mult, settings.realism.max_mult) if settings else None
    c1, c2 = st.columns(2)
    c1.altair_chart(charts.history_chart(runs, "Multiplier", title="Recommended multiplier", bounds=bounds,
                                         y_format=".4f"), width="stretch")
    c2.altair_chart(charts.history_chart(runs, "vMAE %", title="vMAE (%)", floor=0.0), width="stretch")
    st.caption("The line joins OK and Degraded runs only; dashed red lines are the multiplier guardrails; "
               "a triangle marks a value beyond the plotted range (hover for it).")
    show_html(tables.html_table(tables.history_frame(runs), table_id="auto-history", numeric=tables.HISTORY_NUMERIC,
                                nowrap=("Date (UTC)", "DTE Range (days)"), status_col="Status", dim_failed=True,
                                titles=tables.HISTORY_TITLES))


def render_over_time(data: queries.DashboardData) -> None:
    st.subheader("Vol and applied multipliers over time", anchor="over-time")
    vols = charts.vol_history_frame(vols_source(data))
    left, right = st.columns(2)
    with left:
        if vols.height == 0:
            st.info("No run with an RV_7d or ATM IV yet.")
        else:
            st.altair_chart(charts.vol_history_chart(vols_source(data)), width="stretch")
    with right:
        if data.applied_log.height == 0:
            st.info("No multiplier applied yet (`applied_multipliers_log` is empty).")
        else:
            st.altair_chart(charts.applied_log_chart(data.applied_log), width="stretch")
    st.caption("Left: RV_7d and ATM IV of the live and auto-calibration runs (failed runs left out). Right: every "
               "change of an applied multiplier, per scope, from `applied_multipliers_log`.")


def vols_source(data: queries.DashboardData) -> pl.DataFrame:
    runs = [f for f in (data.live_runs, data.auto_history) if f.height]
    return pl.concat(runs, how="diagonal_relaxed") if runs else pl.DataFrame()


def render_live_runs(data: queries.DashboardData) -> None:
    st.header("Recent live runs", anchor="recent-live-runs")
    if data.live_runs.height == 0:
        st.info(f"No live runs for {data.underlying} yet.")
        return
    show_html(tables.html_table(tables.live_runs_frame(data.live_runs), table_id="live-runs",
                                numeric=tables.LIVE_NUMERIC, nowrap=("Time (UTC)",), status_col="Status",
                                decision_col="Decision", dim_failed=True, titles=tables.LIVE_TITLES,
                                raw=tables.LIVE_RAW))


def render_backtest(db: Path, underlying: str, marker: Marker) -> None:
    from calib.ui import backtest as bt

    st.header("Backtest", anchor="backtest")
    try:
        newest = load_backtest(str(db), underlying, marker)
    except CalibError as e:
        st.error(f"Cannot read the backtests: {e}")
        return
    if newest is None:
        st.info(f"No backtest for {underlying} yet: replay the update policy over harvested history with")
        st.code(f"calib backtest --underlying {underlying} --data-dir data/live_deribit --start 2026-11-05T00:00:00Z "
                f"--end 2026-11-20T00:00:00Z --step 1d --lookback-days 7{db_flag(db)}", language="bash")
        return
    info, steps = newest
    st.caption(bt.caption(info))
    for col, (label, value, help_text) in zip(st.columns(5), bt.summary_metrics(info), strict=True):
        col.metric(label, value, help=help_text)
    c1, c2 = st.columns(2)
    c1.altair_chart(bt.multiplier_chart(steps), width="stretch")
    c2.altair_chart(bt.oos_chart(steps), width="stretch")
    st.caption("Each step calibrates the window ending at its as-of time (as auto-calibrate --as-of), feeds the run "
               "to the update policy as a live run would be, then scores the next horizon's quotes out of sample "
               "with the current skew. Backtests never touch the applied multipliers.")


# --------------------------------------------------------------------------- page


def main() -> None:
    st.set_page_config(page_title="calib · IV calibration", page_icon=":material/monitoring:", layout="wide")
    st.session_state.setdefault("refresh", 0)
    show_html(tables.PAGE_STYLE)
    db = db_path()
    underlying = render_sidebar(db)
    refresh = int(st.session_state["refresh"])
    st.title(f"IV calibration · {underlying}")
    try:
        marker = (*queries.change_marker(db), refresh)
        data = load_dashboard(str(db), underlying, marker)
    except CalibError as e:
        st.error(f"Cannot read the history file `{db}`: {e}", icon=":material/error:")
        if isinstance(e, StoreLockedError):  # only then is waiting the fix
            st.caption("A writer (the CLI) may hold the file for a moment: press Refresh to try again.")
        return
    if not render_empty_state(db, data):
        return
    settings: Settings | None
    settings_error = None
    try:
        settings = load_policy_settings(str(config_path()), file_stamp(config_path()), refresh)
    except CalibError as e:
        settings, settings_error = None, str(e)
    try:
        detail = choose_detail_run(db, data, marker)
    except CalibError as e:
        st.error(f"Cannot read the selected run: {e}")
        detail = None
    render_live_summary(db, data)
    render_option_types(detail)
    render_arbitrage(detail)
    render_term_structure(detail)
    render_skew(detail)
    render_policy(db, data, settings, settings_error)
    render_history(data, settings)
    render_over_time(data)
    render_live_runs(data)
    render_backtest(db, underlying, marker)
    st.divider()
    st.caption(f"Loaded {fmt.fmt_ts(data.loaded_at, seconds=True)} UTC from `{db}` "
               f"(schema v{data.info.schema_version or '-'}); re-read whenever the file changes.")


main()

"""Plain-text renderings the CLI prints: the run history, a table, a backtest and its progress.

Strings only (no terminal or Typer import): cli.py parses, calls a service, echoes these.
A calibration run renders itself (`CalibrationResult.summary()`, calib/engine/summary.py).
"""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # polars and the backtest load with a command, not with `calib --help`
    import polars as pl

    from calib.backtest.run import BacktestResult


def _f(v: Any, spec: str = ".4f") -> str:
    return "-" if v is None else f"{v:{spec}}"


NO_RUNS = "No runs recorded yet: run `calib auto-calibrate --underlying BTC`."


def history_text(runs: pl.DataFrame) -> str:
    """`calib history`: one line per run of `calib.queries.list_runs` (newest first), or a hint when empty."""
    if runs.height == 0:
        return NO_RUNS
    lines = [f"{'created (UTC)':17} {'und':4} {'source':9} {'status':9} {'rec':>7} {'smoothed':>8} "
             f"{'vMAE %':>7} {'MAE %':>7} {'samples':>8} {'applied':8} reason"]
    lines += [f"{r['created_at']:%Y-%m-%d %H:%M}  {r['underlying']:4} {r['source']:9} {r['status'].upper():9} "
              f"{_f(r['recommended_multiplier']):>7} {_f(r['smoothed_multiplier']):>8} "
              f"{_f(r['vega_weighted_mae_pct'], '.2f'):>7} {_f(r['mae_pct'], '.2f'):>7} {_f(r['n_samples'], ','):>8} "
              f"{'yes' if r['applied'] else 'no':8} {(r['policy_reason'] or r['reason'] or '-')[:70]}"
              for r in runs.iter_rows(named=True)]
    return "\n".join(lines)


def frame_text(df: pl.DataFrame) -> str:
    """`calib sql`: a result frame as one table (up to 200 rows and 40 columns, no shape line)."""
    import polars as pl

    with pl.Config(tbl_rows=200, tbl_cols=40, fmt_str_lengths=60, tbl_width_chars=200, tbl_hide_dataframe_shape=True):
        return str(df)


def duration_text(td: timedelta) -> str:
    """A timedelta as the CLI takes it: ``1d``, ``6h``, ``90m``."""
    sec = td.total_seconds()
    for unit, size in (("d", 86400.0), ("h", 3600.0), ("m", 60.0)):
        if sec >= size and sec % size == 0:
            return f"{sec / size:g}{unit}"
    return f"{sec:g}s"


def progress_line(stage: str, done: int, total: int, elapsed_s: float) -> str:
    """``backtest calibrate 12/30 steps  8.1 s elapsed  ETA 12.2 s`` (`elapsed_s`: since the stage began)."""
    eta = elapsed_s / done * (total - done) if done else float("nan")
    return f"backtest {stage:9} {done}/{total} steps  {elapsed_s:.1f} s elapsed  ETA {eta:.1f} s"


def backtest_text(result: BacktestResult, db: str) -> str:
    """One line per step (multiplier with its interval, decision, out-of-sample vMAE), then the summary."""
    cfg, s = result.config, result.summary
    lines = [
        f"calib backtest - {cfg.calibration.underlying}  {cfg.start:%Y-%m-%d %H:%M}Z -> {cfg.end:%Y-%m-%d %H:%M}Z  "
        f"step {duration_text(cfg.step)}  horizon {duration_text(cfg.horizon)}  lookback {cfg.calibration.lookback_days:g} d  "
        f"start multiplier {cfg.start_multiplier:.4f}",
        "",
        f"{'as of':17} {'status':8} {'rec. mult [90% CI]':>26} {'applied':>8} {'decision':9} "
        f"{'vMAE% pol':>9} {'static':>7} {'best':>7}",
    ]
    for r in result.steps:
        ci = f"[{_f(r['ci_low'])}-{_f(r['ci_high'])}]"
        lines.append(f"{r['as_of']:%Y-%m-%d %H:%M} {r['status']:8} {_f(r['recommended_iv_multiplier']):>7} {ci:>18} "
                     f"{_f(r['applied_multiplier']):>8} {r['decision']:9} {_f(r['oos_vmae_pct_policy'], '.2f'):>9} "
                     f"{_f(r['oos_vmae_pct_static'], '.2f'):>7} {_f(r['oos_vmae_pct_best'], '.2f'):>7}")
    lines += [
        "",
        f"Out-of-sample vMAE %: policy {_f(s['mean_oos_vmae_pct_policy'], '.3f')}  static "
        f"{_f(s['mean_oos_vmae_pct_static'], '.3f')}  hindsight-best {_f(s['mean_oos_vmae_pct_best'], '.3f')}  "
        f"(policy vs static {_f(s['improvement_pct'], '+.1f')}%)",
        f"Steps {s['n_steps']}  failed {s['n_failed']}  applied {s['n_applied']}  scored {s['n_scored']}  "
        f"engine {result.engine} x{result.workers}  {result.elapsed_s:.1f} s",
        f"Recorded backtest {result.backtest_id} in {db} (applied multipliers untouched)",
    ]
    return "\n".join(lines)

"""Backtests in the history file: tables `backtests` and `backtest_steps` (never `applied_multipliers`)."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

import polars as pl

from calib.backtest.run import STEP_FIELDS, BacktestResult
from calib.engine.result import clean_json
from calib.store.catalog import has_table
from calib.store.connection import connect, write_transaction

_STEP_SCHEMA: dict[str, Any] = {
    "as_of": pl.Datetime("us", "UTC"), "status": pl.String, "reason": pl.String,
    "decision": pl.String, "decision_reason": pl.String, "n_samples": pl.Int64, "n_oos_samples": pl.Int64,
}


def steps_frame(result: BacktestResult) -> pl.DataFrame:
    """The steps as a frame in `STEP_FIELDS` order (float columns for every multiplier and error)."""
    schema = {f: _STEP_SCHEMA.get(f, pl.Float64) for f in STEP_FIELDS}
    return pl.DataFrame([{f: s[f] for f in STEP_FIELDS} for s in result.steps], schema=schema, orient="row")


def record_backtest(db_path: Path | str, result: BacktestResult) -> None:
    """Insert the backtest and its steps in one transaction."""
    cfg, s = result.config, result.summary
    cal = cfg.calibration
    steps = steps_frame(result).with_columns(pl.lit(result.backtest_id).alias("backtest_id"),
                                             pl.int_range(pl.len(), dtype=pl.Int32).alias("step_index"))
    row = [result.backtest_id, result.created_at, cal.underlying, cfg.start, cfg.end, cfg.step.total_seconds(),
           cfg.horizon.total_seconds(), cal.lookback_days, cal.min_dte, cal.max_dte, cfg.start_multiplier,
           str(cal.harvest.data_root), result.engine, result.workers, result.elapsed_s, s["n_steps"], s["n_failed"],
           s["n_applied"], s["n_scored"], s["mean_oos_vmae_pct_policy"], s["mean_oos_vmae_pct_static"],
           s["mean_oos_vmae_pct_best"], s["improvement_pct"], json.dumps(clean_json(asdict(cfg.policy))),
           json.dumps(clean_json(s), allow_nan=False)]
    cols = ", ".join(("backtest_id", "step_index", *STEP_FIELDS))
    with write_transaction(db_path, f"record backtest {result.backtest_id}") as con:
        con.execute(f"INSERT INTO backtests VALUES ({', '.join('?' for _ in row)})", row)
        con.register("new_backtest_steps", steps)
        con.execute(f"INSERT INTO backtest_steps ({cols}) SELECT {cols} FROM new_backtest_steps")
        con.unregister("new_backtest_steps")


def newest_backtest(db_path: Path | str, underlying: str) -> tuple[dict[str, Any], pl.DataFrame] | None:
    """The newest backtest of `underlying` (its `backtests` row) and its steps in time order; None if none."""
    if not Path(db_path).exists():
        return None
    with connect(db_path, read_only=True) as con:
        if not has_table(con, "backtests"):
            return None
        head = con.execute("SELECT * FROM backtests WHERE underlying = ? ORDER BY created_at DESC LIMIT 1",
                           [underlying])
        names = [d[0] for d in head.description]
        rows = head.fetchall()  # drained: the connection takes the next query
        if not rows:
            return None
        info = dict(zip(names, rows[0], strict=True))
        steps = con.sql("SELECT * FROM backtest_steps WHERE backtest_id = ? ORDER BY step_index",
                        params=[info["backtest_id"]]).pl()
    return info, steps

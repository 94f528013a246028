"""Writing calibration runs: one transaction per run, applied state in the same one."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import duckdb

from calib.engine.result import CalibrationResult, clean_json
from calib.store.connection import write_transaction

if TYPE_CHECKING:  # a type only: an auto-calibrate run, which has no policy decision, loads no calib.policy
    from calib.policy import PolicyOutcome

RUN_COLUMNS: tuple[str, ...] = (
    "run_id", "created_at", "source", "underlying", "dte_min", "dte_max", "lookback_days", "n_samples",
    "multiplier_tested", "recommended_multiplier", "smoothed_multiplier", "mae_pct", "mae_vol_points",
    "vega_weighted_mae_pct", "bias_pct", "status", "reason", "applied", "applied_at", "data_quality_status",
    "result", "n_snapshots", "at_bound", "rv_7d_pct", "atm_iv_pct", "coverage_pct", "rows_scanned",
    "window_start", "window_end", "replay", "policy_decision", "policy_reason", "smoothed_band_multipliers",
)

# "Newest" run: the last one committed (`seq`, migration 4), wall time only for rows without it.
NEWEST_FIRST = "seq DESC NULLS LAST, created_at DESC"


def run_row(result: CalibrationResult, outcome: PolicyOutcome | None, applied_at: datetime | None) -> dict[str, Any]:
    d = result.to_dict()
    gm = d["global_metrics"]
    dq = d["data_quality"]
    applied = applied_at is not None
    d["applied"] = applied
    if outcome is not None:
        d["policy"] = {"decision": outcome.decision, "reason": outcome.reason,
                       "smoothed_multiplier": outcome.smoothed_multiplier,
                       "smoothed_bands": outcome.smoothed_bands, "ewma_multiplier": outcome.ewma_multiplier,
                       "ewma_bands": outcome.ewma_bands}
    return {
        "run_id": result.run_id,
        "created_at": result.created_at,
        "source": result.source,
        "underlying": result.underlying,
        "dte_min": result.dte_min,
        "dte_max": result.dte_max,
        "lookback_days": result.lookback_days,
        "n_samples": result.n_samples,
        "multiplier_tested": gm["multiplier_tested"],
        "recommended_multiplier": gm["recommended_iv_multiplier"],
        "smoothed_multiplier": outcome.smoothed_multiplier if outcome else None,
        "mae_pct": gm["mae_pct"],
        "mae_vol_points": gm["mae_vol_points"],
        "vega_weighted_mae_pct": gm["vega_weighted_mae_pct"],
        "bias_pct": gm["bias_pct"],
        "status": result.status,
        "reason": result.reason,
        "applied": applied,
        "applied_at": applied_at,
        "data_quality_status": dq["status"],
        "result": json.dumps(d, allow_nan=False),
        "n_snapshots": result.n_snapshots,
        "at_bound": gm["at_bound"],
        "rv_7d_pct": gm["rv_7d_pct"],
        "atm_iv_pct": gm["atm_iv_pct"],
        "coverage_pct": dq["coverage_pct"],
        "rows_scanned": dq["rows_scanned"],
        "window_start": result.window.get("start"),
        "window_end": result.window.get("end"),
        "replay": result.replay,
        "policy_decision": outcome.decision if outcome else None,
        "policy_reason": outcome.reason if outcome else None,
        "smoothed_band_multipliers": json.dumps(clean_json(outcome.smoothed_bands)) if outcome else None,
    }


def insert_run(con: duckdb.DuckDBPyConnection, row: dict[str, Any], *, applied_seq: int | None = None) -> int:
    """Insert one run inside the caller's write transaction; returns its `seq`.

    `seq` is max + 1 read in the same transaction: one writer holds the file at a
    time, so it numbers runs in commit order (the order "newest" means).
    """
    got = con.execute("SELECT coalesce(max(seq), 0) + 1 FROM calibration_runs").fetchone()
    seq = int(got[0]) if got else 1
    cols = ", ".join((*RUN_COLUMNS, "seq", "applied_seq"))
    marks = ", ".join("?" for _ in range(len(RUN_COLUMNS) + 2))
    con.execute(f"INSERT INTO calibration_runs ({cols}) VALUES ({marks})",
                [*(row[c] for c in RUN_COLUMNS), seq, applied_seq])
    return seq


def record_run(db_path: Path | str, result: CalibrationResult) -> None:
    """Insert one run that is never applied (auto-calibrate) in one transaction.

    Live runs, whose policy decision may write `applied_multipliers`, go through
    `calib.live.record_live_run`, which decides and writes in one transaction.
    """
    row = run_row(result, None, None)
    with write_transaction(db_path, f"record run {result.run_id}") as con:
        insert_run(con, row)


# Reads a live write needs on its own transaction's connection (the policy's view of the past,
# Force-Apply's target): here beside the writes, so calib.live holds no SQL.
def last_live_apply_at(con: duckdb.DuckDBPyConnection, underlying: str) -> datetime | None:
    """When a live run of `underlying` was last applied (None: never)."""
    row = con.execute(
        "SELECT max(applied_at) FROM calibration_runs WHERE underlying = ? AND source = 'live' AND applied",
        [underlying],
    ).fetchone()
    return row[0] if row else None


def newest_live_policy(con: duckdb.DuckDBPyConnection, underlying: str) -> dict[str, Any]:
    """The `policy` block of the newest live run that did not fail ({} when there is none)."""
    prev = con.execute(
        "SELECT result FROM calibration_runs WHERE underlying = ? AND source = 'live' AND status <> 'failed' "
        f"ORDER BY {NEWEST_FIRST} LIMIT 1",
        [underlying],
    ).fetchone()
    return (json.loads(prev[0]).get("policy") or {}) if prev and prev[0] else {}


def newest_live_run(con: duckdb.DuckDBPyConnection, underlying: str) -> tuple[Any, ...] | None:
    """(run_id, status, reason, smoothed_multiplier, smoothed_band_multipliers, applied, applied_at,
    created_at) of the newest live run, the one Force-Apply applies."""
    row = con.execute(
        "SELECT run_id, status, reason, smoothed_multiplier, smoothed_band_multipliers, applied, applied_at, "
        f"created_at FROM calibration_runs WHERE underlying = ? AND source = 'live' ORDER BY {NEWEST_FIRST} LIMIT 1",
        [underlying],
    ).fetchone()
    return tuple(row) if row is not None else None


def mark_applied(con: duckdb.DuckDBPyConnection, run_id: str, *, at: datetime, applied_seq: int, reason: str) -> None:
    """Record on an existing run that it was applied (Force-Apply), inside the caller's transaction."""
    con.execute(
        "UPDATE calibration_runs SET applied = true, applied_at = ?, applied_seq = ?, policy_decision = 'applied', "
        "policy_reason = ? WHERE run_id = ?",
        [at, applied_seq, reason, run_id],
    )

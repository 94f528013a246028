"""Live calibration, the update policy in action, and Force-Apply.

`run_calibration_extended` scores one current chain (Deribit, or `--replay`
of the newest harvested snapshot) with the same engine as auto-calibrate,
tested at the applied multiplier read from the store. `calibrate_live_and_record`
then lets the policy decide and records run + outcome (+ applied state) in
one transaction. `force_apply_latest` is what `calib apply --force` and the
UI button call.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any

from calib.calibration import calibrate_read, resolve_multiplier_tested
from calib.config import CalibrationConfig, PolicyConfig
from calib.data.reader import HarvestRead, newest_snapshot, read_harvest
from calib.engine.result import CalibrationResult
from calib.errors import NoDataError, PolicyError, StoreError
from calib.policy import FORCED_REASON, PolicyOutcome, PolicyState, decide
from calib.store.applied import read_applied, write_applied, write_clock
from calib.store.connection import write_transaction
from calib.store.history import (
    insert_run,
    last_live_apply_at,
    mark_applied,
    newest_live_policy,
    newest_live_run,
    run_row,
)


@dataclass(frozen=True, slots=True, kw_only=True)
class LiveRunRecord:
    result: CalibrationResult
    outcome: PolicyOutcome
    applied_at: datetime | None

    def to_dict(self) -> dict[str, Any]:
        """`calibrate-live --json`: the result's `to_dict()` plus `applied` and the policy outcome."""
        o = self.outcome
        return {**self.result.to_dict(), "applied": self.applied_at is not None,
                "policy": {"decision": o.decision, "reason": o.reason, "smoothed_multiplier": o.smoothed_multiplier,
                           "smoothed_bands": o.smoothed_bands}}


def newest_snapshot_ts(data_root: Path, underlying: str) -> datetime:
    """Newest `snapshot_ts` in a harvest directory (for `--replay`)."""
    newest = newest_snapshot(Path(data_root), underlying)
    if newest is None:
        raise NoDataError(f"no readable snapshot for {underlying} under {Path(data_root) / underlying}")
    return newest


def run_calibration_extended(config: CalibrationConfig, *, chain: HarvestRead | None = None,
                             db_path: Path | None = None) -> CalibrationResult:
    """Score one current chain with the shared engine (source = live).

    Without `chain`: the newest snapshot under `config.harvest.data_root` when
    that holds the underlying (or `config.replay`), RV from the 7 days of index
    before it; otherwise the chain and index history come from Deribit.
    `multiplier_tested` None means the applied global multiplier of the history
    file `db_path` (1.0 without one).
    """
    config = replace(config, source="live")
    if chain is None:
        # No chain handed in: replay the newest harvested snapshot under data_root when
        # there is one (offline, tests), else ask Deribit.
        if config.replay or (Path(config.harvest.data_root) / config.underlying).is_dir():
            config = replace(config, replay=True)
        else:
            from calib.sources.live_chain import fetch_live_chain

            chain = fetch_live_chain(config.underlying)
    if chain is None:
        ts = newest_snapshot_ts(config.harvest.data_root, config.underlying)
        chain = read_harvest(config.harvest.data_root, config.underlying, window_start=ts, window_end=ts,
                             warmup=config.harvest.rv_warmup)
    return calibrate_read(chain, config, coverage_applies=False, db_path=db_path)


def policy_state(con: Any, underlying: str) -> PolicyState:
    """The policy's view of the past, read on `con` (inside the caller's transaction when writing)."""
    applied = read_applied(con, underlying)
    policy = newest_live_policy(con, underlying)
    g = applied.get("global")
    return PolicyState(
        applied_global=g[0] if g else None,
        applied_bands={k: v[0] for k, v in applied.items() if k != "global"},
        last_applied_at=last_live_apply_at(con, underlying),
        prev_ewma=policy.get("ewma_multiplier"),
        prev_ewma_bands=policy.get("ewma_bands") or {},
    )


def calibrate_live_and_record(
    config: CalibrationConfig, db_path: Path, policy: PolicyConfig, *, chain: HarvestRead | None = None
) -> LiveRunRecord:
    """Live run tested at the applied multiplier, policy decision, one-transaction record.

    `config.multiplier_tested` is replaced by the applied global multiplier of `db_path`, read on
    the connection that first checks the run can be recorded there (StoreError before any work).
    """
    config = resolve_multiplier_tested(replace(config, source="live", multiplier_tested=None), db_path,
                                       for_write=True)
    result = run_calibration_extended(config, chain=chain, db_path=db_path)
    return record_live_run(db_path, result, policy)


def record_live_run(db_path: Path, result: CalibrationResult, policy: PolicyConfig) -> LiveRunRecord:
    """Decide and record in ONE write transaction.

    The policy reads the applied state, the last apply time and the EWMA on the
    same connection that then inserts the run and (when applying) writes
    `applied_multipliers`, so a concurrent live run or Force-Apply cannot slip
    between the decision and the write (the file admits one writer at a time).
    """
    with write_transaction(db_path, f"record live run {result.run_id}") as con:
        now = write_clock(con, result.created_at)  # taken while this transaction holds the file
        outcome = decide(result, policy_state(con, result.underlying), policy, now)
        applying = outcome.apply and outcome.smoothed_multiplier is not None
        applied_at = now if applying else None
        applied_seq = None
        if applying:
            applied_seq = write_applied(con, result.underlying, outcome.smoothed_multiplier,  # type: ignore[arg-type]
                                        outcome.smoothed_bands, run_id=result.run_id, at=now, reason=outcome.reason)
        insert_run(con, run_row(result, outcome, applied_at), applied_seq=applied_seq)
    return LiveRunRecord(result=result, outcome=outcome, applied_at=applied_at)


@dataclass(frozen=True, slots=True, kw_only=True)
class ForceApplyResult:
    run_id: str
    multiplier: float
    bands: dict[str, float]
    applied_at: datetime
    already_applied: bool

    def to_dict(self) -> dict[str, Any]:
        """`calib apply --force --json`."""
        return {"run_id": self.run_id, "global_multiplier": self.multiplier, "bands": self.bands,
                "applied_at": self.applied_at.isoformat() if self.applied_at else None,
                "already_applied": self.already_applied, "reason": "Forced by user"}

    def summary(self) -> str:
        """The line `calib apply --force` prints."""
        if self.already_applied:
            return f"Run {self.run_id} is already applied (global {self.multiplier:.4f}); nothing changed."
        bands = ", ".join(f"{k} {v:.4f}" for k, v in self.bands.items())
        return (f"Applied run {self.run_id}: global {self.multiplier:.4f}" + (f"; {bands}" if bands else "")
                + " (Forced by user)")


def force_apply_latest(db_path: Path, underlying: str) -> ForceApplyResult:
    """Apply the newest live run's smoothed multipliers ("Forced by user"), in one transaction.

    Raises PolicyError for a failed run or a run without a smoothed value,
    StoreError when there is no live run.
    """
    with write_transaction(db_path, f"force-apply the newest {underlying} live run") as con:
        row = newest_live_run(con, underlying)
        if row is None:
            raise StoreError(f"no live run for {underlying} yet: run `calib calibrate-live --underlying {underlying}` first")
        run_id, status, reason, smoothed, bands_json, applied, applied_at, created_at = row
        if status == "failed":
            raise PolicyError(f"refusing to apply run {run_id}: its status is failed ({reason})")
        if smoothed is None:
            raise PolicyError(f"run {run_id} has no smoothed multiplier to apply")
        bands = {k: float(v) for k, v in (json.loads(bands_json) if bands_json else {}).items() if v is not None}
        if applied:  # nothing to write: the transaction commits empty
            return ForceApplyResult(run_id=run_id, multiplier=float(smoothed), bands=bands,
                                    applied_at=applied_at, already_applied=True)
        # Every timestamp is taken here, inside the transaction: connect() may have waited for the
        # lock while another writer added newer runs.
        now = write_clock(con, created_at)
        applied_seq = write_applied(con, underlying, float(smoothed), bands, run_id=run_id, at=now,
                                    reason=FORCED_REASON)
        mark_applied(con, run_id, at=now, applied_seq=applied_seq, reason=FORCED_REASON)
    return ForceApplyResult(run_id=run_id, multiplier=float(smoothed), bands=bands, applied_at=now,
                            already_applied=False)

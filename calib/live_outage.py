"""A live run whose market-data source failed: recorded as a `failed` run with the cause.

When Deribit answers 5xx, malformed JSON or a JSON-RPC error, or does not answer
within the time budget, `calib calibrate-live` has no chain to score. It still
records a live run (status `failed`, reason "Source unavailable: ...", data-quality
issue `source_unavailable`), so the history and the app show that the live feed
was down and when, and the policy never applies it (failed runs are skipped).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

import polars as pl

from calib.calibration import resolve_multiplier_tested
from calib.config import CalibrationConfig, PolicyConfig
from calib.engine.metrics import EMPTY
from calib.engine.result import (
    CalibrationResult,
    DataQuality,
    DataQualityIssue,
    GlobalMetrics,
    OptionTypeMetrics,
)
from calib.errors import SourceError
from calib.live import LiveRunRecord, record_live_run, run_calibration_extended
from calib.stages import new_run_id

SOURCE_UNAVAILABLE = "source_unavailable"
SOURCE_UNAVAILABLE_REASON = "Source unavailable"


def source_unavailable_result(config: CalibrationConfig, cause: str, *, source: str,
                              waited_s: float) -> CalibrationResult:
    """The failed live result for a chain that could not be fetched.

    Parameters
    ----------
    config
        The live run's configuration (`multiplier_tested` resolved: it is recorded).
    cause
        What failed, e.g. the `SourceError` message naming the method, URL and answer.
    source
        Where the chain was asked for (the API base URL).
    waited_s
        Seconds spent before giving up.
    """
    now = datetime.now(UTC)
    config = replace(config, source="live")
    issue = DataQualityIssue(code=SOURCE_UNAVAILABLE, severity="error",
                             message=f"no live chain from {source} after {waited_s:.1f} s: {cause}")
    return CalibrationResult(
        run_id=new_run_id(config.underlying, now), created_at=now, source="live",
        underlying=config.underlying, status="failed", reason=f"{SOURCE_UNAVAILABLE_REASON}: {cause}",
        applied=False, dte_min=config.min_dte, dte_max=config.max_dte, lookback_days=None,
        n_samples=0, n_snapshots=0,
        global_metrics=GlobalMetrics(multiplier_tested=config.multiplier_tested_value, recommended_iv_multiplier=None,
                                     at_bound=False, at_recommended=EMPTY, tested=EMPTY, rv_7d_pct=None,
                                     atm_iv_pct=None),
        bands=(), option_type_metrics=tuple(OptionTypeMetrics(option_type=t, metrics=EMPTY)
                                            for t in config.option_types),
        skew=None, recommended_surface=None,
        data_quality=DataQuality(status="failed", issues=(issue,), rows_scanned=0, rows_used=0, excluded={},
                                 coverage_pct=None, extra={"source": source, "waited_s": round(waited_s, 3)}),
        window={"start": now, "end": now, "newest_snapshot": None, "source": source},
        timings_s={"source_wait": waited_s}, replay=False,
    )


def record_source_outage(config: CalibrationConfig, db_path: Path, policy: PolicyConfig, cause: str, *,
                         source: str, waited_s: float) -> LiveRunRecord:
    """Record the failed live run of an unreachable source, tested at the applied multiplier
    (`config.multiplier_tested` when set, else read from `db_path`)."""
    config = resolve_multiplier_tested(config, db_path)
    result = source_unavailable_result(config, cause, source=source, waited_s=waited_s)
    return record_live_run(db_path, result, policy)


def calibrate_live_from_exchange(config: CalibrationConfig, db_path: Path, policy: PolicyConfig, *,
                                 base_url: str, budget_s: float) -> LiveRunRecord:
    """`calib calibrate-live` without --replay: fetch the chain from `base_url` within `budget_s` and score it;
    when no chain comes back, record the outage as a failed live run instead (SPEC: exit 3)."""
    from calib.sources.live_chain import fetch_live_chain
    from calib.store.connection import check_writable

    check_writable(db_path)  # before the network: refuse a history file the run could not be recorded in
    config = replace(config, source="live", multiplier_tested=None)
    t0 = time.monotonic()
    try:
        chain = fetch_live_chain(config.underlying, base_url=base_url, budget_s=budget_s)
    except SourceError as e:
        return record_source_outage(config, db_path, policy, str(e), source=base_url, waited_s=time.monotonic() - t0)
    # The applied multiplier is read once the chain is in, not before the network wait (up to
    # `budget_s`): a Force-Apply during the fetch is what the chain is tested at.
    config = resolve_multiplier_tested(config, db_path)
    return record_live_run(db_path, run_calibration_extended(config, chain=chain, db_path=db_path), policy)


def is_source_outage(result: dict[str, object]) -> bool:
    """True for a stored result JSON recorded by `source_unavailable_result`."""
    dq = result.get("data_quality")
    issues = dq.get("issues") if isinstance(dq, dict) else None
    return isinstance(issues, list) and any(isinstance(i, dict) and i.get("code") == SOURCE_UNAVAILABLE
                                            for i in issues)


@dataclass(frozen=True, slots=True, kw_only=True)
class LiveFeedOutage:
    """The live feed is down: the newest live runs all failed to reach the source."""

    since: datetime  # the oldest of those consecutive failed runs (within the runs looked at)
    failed_runs: int
    last_reached: datetime | None  # the newest live run before them (None: none in the runs looked at)
    reason: str  # the newest failure's reason


def live_feed_outage(live_runs: pl.DataFrame) -> LiveFeedOutage | None:
    """Whether the newest live run (of `live_runs`, newest first) could not reach its source.

    Needs the columns `created_at` and `reason`; None when the feed is up or
    there are no live runs.
    """
    if live_runs.height == 0 or not {"created_at", "reason"} <= set(live_runs.columns):
        return None
    down = live_runs["reason"].fill_null("").str.starts_with(f"{SOURCE_UNAVAILABLE_REASON}: ")
    if not down[0]:
        return None
    first_up = down.arg_min()  # the first False: the newest run that reached the source
    n = live_runs.height if first_up is None or down.all() else int(first_up)
    created = live_runs["created_at"]
    return LiveFeedOutage(since=created[n - 1], failed_runs=n, reason=str(live_runs["reason"][0]),
                          last_reached=created[n] if n < live_runs.height else None)

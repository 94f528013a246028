"""Webhook alerts after a run is recorded (`[alerts]` in calib.toml).

A failed or degraded auto-calibration at 03:00 should reach the trader, not
wait for someone to open the dashboard. After `auto-calibrate` or
`calibrate-live` has recorded its run, `notify_run` POSTs one small JSON
payload (no links: the receiver decides what to show) with bounded retry.
The run is already committed by then: an alert that cannot be delivered is
one log line and changes neither the run nor the exit code.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx

from calib.config import AlertsConfig

PAYLOAD_KEYS: tuple[str, ...] = (
    "event", "run_id", "created_at", "underlying", "source", "status", "reason", "applied",
    "policy_decision", "multiplier_tested", "recommended_multiplier", "vega_weighted_mae_pct",
    "n_samples", "data_quality_status",
)


@dataclass(frozen=True, slots=True, kw_only=True)
class AlertOutcome:
    """What happened to one alert: delivered or not, after how many attempts, and why not."""

    sent: bool
    attempts: int
    status_code: int | None = None
    error: str | None = None
    elapsed_s: float = 0.0


def alert_payload(run: dict[str, Any]) -> dict[str, Any]:
    """The webhook body for a recorded run (`CalibrationResult.to_dict()`, plus `policy` for live runs)."""
    gm = run.get("global_metrics") or {}
    policy = run.get("policy") or {}
    return {
        "event": "calibration_run_recorded",
        "run_id": run.get("run_id"),
        "created_at": run.get("created_at"),
        "underlying": run.get("underlying"),
        "source": run.get("source"),
        "status": run.get("status"),
        "reason": run.get("reason"),
        "applied": bool(run.get("applied")),
        "policy_decision": policy.get("decision"),
        "multiplier_tested": gm.get("multiplier_tested"),
        "recommended_multiplier": gm.get("recommended_iv_multiplier"),
        "vega_weighted_mae_pct": gm.get("vega_weighted_mae_pct"),
        "n_samples": run.get("n_samples"),
        "data_quality_status": (run.get("data_quality") or {}).get("status"),
    }


def _where(url: str) -> str:
    """Scheme and host of the webhook only: its path often carries a secret (Slack, Teams)."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def _retryable(code: int) -> bool:
    return code == 429 or code >= 500


def post_alert(config: AlertsConfig, payload: dict[str, Any], *,
               sleep: Callable[[float], None] = time.sleep) -> AlertOutcome:
    """POST `payload` to `config.webhook_url`: 1 + `retries` attempts, back-off doubling from `backoff_s`.

    Connection errors, timeouts, 429 and 5xx are retried; any other non-2xx
    answer (a wrong URL, a refused token) is final.
    """
    if not config.webhook_url:
        return AlertOutcome(sent=False, attempts=0, error="no webhook_url configured")
    t0 = time.monotonic()
    attempts, code, error = 0, None, None
    with httpx.Client(timeout=config.timeout_s, follow_redirects=False) as http:
        for attempt in range(config.retries + 1):
            if attempt:
                sleep(config.backoff_s * 2 ** (attempt - 1))
            attempts += 1
            try:
                resp = http.post(config.webhook_url, json=payload,
                                 headers={"User-Agent": "calib-alerts/1", "Content-Type": "application/json"})
            except httpx.HTTPError as e:
                code, error = None, f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
                continue
            code = resp.status_code
            if 200 <= code < 300:
                return AlertOutcome(sent=True, attempts=attempts, status_code=code,
                                    elapsed_s=time.monotonic() - t0)
            error = f"HTTP {code}"
            if not _retryable(code):
                break
    return AlertOutcome(sent=False, attempts=attempts, status_code=code, error=error,
                        elapsed_s=time.monotonic() - t0)


def notify_run(config: AlertsConfig, run: dict[str, Any], *, log: Callable[[str], None]) -> AlertOutcome | None:
    """Alert on a recorded run if its status is in `config.on`; None when no alert was due.

    Never raises: whatever goes wrong becomes one line through `log`.
    """
    status = run.get("status")
    if not config.enabled or status not in config.on:
        return None
    where = _where(config.webhook_url or "")
    try:
        outcome = post_alert(config, alert_payload(run))
    except Exception as e:  # an alert must never cost the recorded run its exit code
        log(f"alert: could not send the {status} alert for run {run.get('run_id')} to {where} "
            f"({type(e).__name__}: {e}); the run is recorded")
        return AlertOutcome(sent=False, attempts=0, error=f"{type(e).__name__}: {e}")
    if outcome.sent:
        log(f"alert: posted {status} run {run.get('run_id')} to {where} (HTTP {outcome.status_code})")
    else:
        log(f"alert: could not post the {status} alert for run {run.get('run_id')} to {where} after "
            f"{outcome.attempts} attempt(s) in {outcome.elapsed_s:.1f} s ({outcome.error}); the run is recorded")
    return outcome

"""CalibrationResult and its parts; `to_dict()` feeds `--json` and the store (no NaN)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from os import PathLike
from typing import Any

from calib._typing import Severity, Status
from calib.engine.metrics import ErrorMetrics
from calib.engine.skew import SkewFit
from calib.engine.summary import render_summary, warning_block


def clean_json(obj: Any) -> Any:
    """Replace NaN/inf with None recursively and datetimes with ISO strings."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(k): clean_json(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [clean_json(v) for v in obj]
    if isinstance(obj, datetime):
        return obj.isoformat()
    if hasattr(obj, "item") and callable(obj.item):  # numpy scalar
        return clean_json(obj.item())
    return obj


# The data-quality verdict a result carries: here, below the data layer that computes it
# (calib.data.quality), so the engine's result type does not import upward.
@dataclass(frozen=True, slots=True, kw_only=True)
class DataQualityIssue:
    code: str
    severity: Severity
    message: str
    count: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"code": self.code, "severity": self.severity, "message": self.message, "count": self.count}


@dataclass(frozen=True, slots=True, kw_only=True)
class DataQuality:
    status: Status
    issues: tuple[DataQualityIssue, ...]
    rows_scanned: int
    rows_used: int
    excluded: dict[str, int]
    coverage_pct: float | None
    snapshots_expected: int | None = None
    snapshots_present: int = 0
    snapshot_step_minutes: float | None = None
    largest_gap_minutes: float | None = None
    files_total: int = 0
    files_skipped: int = 0
    invalid_pct: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "issues": [i.to_dict() for i in self.issues],
            "rows_scanned": self.rows_scanned,
            "rows_used": self.rows_used,
            "excluded": dict(self.excluded),
            "coverage_pct": self.coverage_pct,
            "snapshots_expected": self.snapshots_expected,
            "snapshots_present": self.snapshots_present,
            "snapshot_step_minutes": self.snapshot_step_minutes,
            "largest_gap_minutes": self.largest_gap_minutes,
            "files_total": self.files_total,
            "files_skipped": self.files_skipped,
            "invalid_pct": self.invalid_pct,
            **self.extra,
        }



@dataclass(frozen=True, slots=True, kw_only=True)
class BandMetrics:
    name: str
    dte_min: float
    dte_max: float
    n_samples: int
    recommended_iv_multiplier: float | None
    at_bound: bool
    metrics: ErrorMetrics
    tested: ErrorMetrics
    recommended_iv_multiplier_current_skew: float | None = None
    ci_low: float | None = None  # bootstrap interval of `recommended_iv_multiplier` (by snapshot, 90 %)
    ci_high: float | None = None
    # Guardrail verdict on this band (calib.engine.guardrails): "ok", "too_few_samples" (reported,
    # never applied) or "failed" (the run fails naming it). The policy applies only "ok" bands.
    status: str = "ok"

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "status": self.status,
            "dte_min": self.dte_min,
            "dte_max": self.dte_max,
            "n_samples": self.n_samples,
            "recommended_iv_multiplier": self.recommended_iv_multiplier,
            "ci_low": self.ci_low,
            "ci_high": self.ci_high,
            "recommended_iv_multiplier_current_skew": self.recommended_iv_multiplier_current_skew,
            "at_bound": self.at_bound,
            **self.metrics.to_dict(),
            "tested": self.tested.to_dict(),
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class OptionTypeMetrics:
    option_type: str
    metrics: ErrorMetrics

    def to_dict(self) -> dict[str, Any]:
        return {"option_type": self.option_type, "n_samples": self.metrics.n_samples, **self.metrics.to_dict()}


@dataclass(frozen=True, slots=True, kw_only=True)
class GlobalMetrics:
    multiplier_tested: float
    recommended_iv_multiplier: float | None
    at_bound: bool
    at_recommended: ErrorMetrics
    tested: ErrorMetrics
    rv_7d_pct: float | None
    atm_iv_pct: float | None
    recommended_iv_multiplier_current_skew: float | None = None  # what the live policy smooths and applies
    ci_low: float | None = None  # bootstrap interval of `recommended_iv_multiplier` (by snapshot, 90 %)
    ci_high: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "multiplier_tested": self.multiplier_tested,
            "recommended_iv_multiplier": self.recommended_iv_multiplier,
            "ci_low": self.ci_low,
            "ci_high": self.ci_high,
            "recommended_iv_multiplier_current_skew": self.recommended_iv_multiplier_current_skew,
            "at_bound": self.at_bound,
            **self.at_recommended.to_dict(),
            "tested": self.tested.to_dict(),
            "rv_7d_pct": self.rv_7d_pct,
            "atm_iv_pct": self.atm_iv_pct,
            "iv_rv_ratio": (self.atm_iv_pct / self.rv_7d_pct)
            if self.atm_iv_pct and self.rv_7d_pct else None,
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class CalibrationResult:
    run_id: str
    created_at: datetime
    source: str
    underlying: str
    status: Status
    reason: str
    applied: bool
    dte_min: float
    dte_max: float
    lookback_days: float | None
    n_samples: int
    n_snapshots: int
    global_metrics: GlobalMetrics
    bands: tuple[BandMetrics, ...]
    option_type_metrics: tuple[OptionTypeMetrics, ...]
    skew: SkewFit | None
    recommended_surface: dict[str, Any] | None
    data_quality: DataQuality
    window: dict[str, Any] = field(default_factory=dict)
    timings_s: dict[str, float] = field(default_factory=dict)
    replay: bool = False
    arbitrage: dict[str, Any] | None = None  # static-arbitrage checks (calib.engine.expiries.chain_view)
    error_map: dict[str, Any] | None = None  # errors by DTE x z bucket (calib.engine.metrics.ErrorMapSums)
    expiries: tuple[dict[str, Any], ...] = ()  # newest chain per listed expiry: ATM IVs and smiles

    def to_dict(self) -> dict[str, Any]:
        return clean_json({
            "run_id": self.run_id,
            "created_at": self.created_at,
            "source": self.source,
            "underlying": self.underlying,
            "status": self.status,
            "reason": self.reason,
            "applied": self.applied,
            "replay": self.replay,
            "dte_min": self.dte_min,
            "dte_max": self.dte_max,
            "lookback_days": self.lookback_days,
            "n_samples": self.n_samples,
            "n_snapshots": self.n_snapshots,
            "global_metrics": self.global_metrics.to_dict(),
            "bands": [b.to_dict() for b in self.bands],
            "option_type_metrics": [o.to_dict() for o in self.option_type_metrics],
            "skew": self.skew.to_dict() if self.skew else None,
            "recommended_surface": self.recommended_surface,
            "data_quality": self.data_quality.to_dict(),
            "window": self.window,
            "timings_s": self.timings_s,
            "arbitrage": self.arbitrage,
            "error_map": self.error_map,
            "expiries": list(self.expiries),
        })

    def summary(self, db: str | PathLike[str], *, policy: Mapping[str, Any] | None = None) -> str:
        """The text summary the CLI prints for this run, recorded in `db` (a live run adds its policy
        outcome: decision, reason, smoothed_multiplier)."""
        d = self.to_dict()
        if policy is not None:
            d["policy"] = dict(policy)
        return render_summary(d, db)

    def failure_warning(self) -> str | None:
        """The boxed warning printed after a failed run (None unless status is failed)."""
        return warning_block(self.to_dict()) if self.status == "failed" else None

"""Frozen configuration objects, built-in defaults and `calib.toml` loading.

Every knob a trader tunes (bands, skew anchors, thresholds, policy) has a
built-in default here and can be overridden in an editable TOML file:
`./calib.toml`, or the path in the `CALIB_CONFIG` environment variable.
"""

from __future__ import annotations

import math
import os
import tomllib
from dataclasses import dataclass, field, fields, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from calib._typing import EXTRAPOLATIONS, OPTION_TYPES, UNDERLYINGS, Extrapolation
from calib.errors import InvalidInputError

DEFAULT_DATA_DIR = Path("data/live_deribit")
DEFAULT_DB = Path("data/calibration.duckdb")


def history_path(db: Path | str | None = None) -> Path:
    """The history file: `db` when given, else `$CALIB_DB`, else `DEFAULT_DB` (the CLI's `--db` rule).

    The one place that reads `$CALIB_DB`: library calls, the read API and the app resolve through it.
    """
    if db is not None:
        return Path(db)
    return Path(os.environ.get("CALIB_DB") or DEFAULT_DB)
MIN_TICK_COIN = 0.0001  # Deribit's minimum option price, in coin
DAYS_PER_YEAR = 365.0  # crypto trades 24/7
MAX_LOOKBACK_DAYS = 3650.0
# Realism guardrails, SPEC section 4 (the one definition: RealismThresholds defaults, the policy's
# clamp range by default, and `calib.MIN_MULT`...; calib.toml [realism] / [policy] override).
MIN_MULT = 0.7
MAX_MULT = 1.6
MAX_MAE = 400.0  # percent
MAX_VEGA_MAE = 200.0  # percent


@dataclass(frozen=True, slots=True, kw_only=True)
class Band:
    """A DTE band with its own multiplier: quotes with dte_min <= DTE < dte_max."""

    name: str
    dte_min: float
    dte_max: float

    def __post_init__(self) -> None:
        if not self.dte_min < self.dte_max:
            raise InvalidInputError(
                f"band {self.name!r}: `dte_min` ({self.dte_min}) must be below `dte_max` ({self.dte_max})"
            )


DEFAULT_BANDS: tuple[Band, ...] = (
    Band(name="weekly", dte_min=0.0, dte_max=10.0),
    Band(name="monthly", dte_min=10.0, dte_max=45.0),
    Band(name="quarterly", dte_min=45.0, dte_max=180.0),
)


@dataclass(frozen=True, slots=True, kw_only=True)
class SkewConfig:
    """The trader's current skew curve: ratio to ATM vol at standardized moneyness z."""

    anchors_z: tuple[float, ...] = (-2.0, -1.0, -0.5, 0.0, 0.5, 1.0, 2.0)
    current_ratios: tuple[float, ...] = (1.30, 1.10, 1.03, 1.0, 1.01, 1.06, 1.20)
    # Beyond the outer anchors: "flat" holds the outer ratio (what the agent does today),
    # "linear" extends the outer segments' slopes (floored at `calib.engine.model.RATIO_FLOOR`).
    extrapolation: Extrapolation = "flat"

    def __post_init__(self) -> None:
        if self.extrapolation not in EXTRAPOLATIONS:
            raise InvalidInputError(
                f"skew: `extrapolation` must be one of {', '.join(EXTRAPOLATIONS)}; got {self.extrapolation!r}")
        if len(self.anchors_z) != len(self.current_ratios):
            raise InvalidInputError(
                f"skew: {len(self.anchors_z)} anchors but {len(self.current_ratios)} ratios"
            )
        if list(self.anchors_z) != sorted(set(self.anchors_z)):
            raise InvalidInputError(f"skew: `anchors_z` must increase strictly; got {self.anchors_z}")
        if 0.0 not in self.anchors_z:
            raise InvalidInputError("skew: `anchors_z` must contain 0.0 (the ATM anchor, ratio 1.0)")
        if any(r <= 0 for r in self.current_ratios):
            raise InvalidInputError(f"skew: ratios must be positive; got {self.current_ratios}")


@dataclass(frozen=True, slots=True, kw_only=True)
class QualityThresholds:
    """Data-quality grading rules (SPEC section 3)."""

    failed_coverage_pct: float = 25.0
    degraded_coverage_pct: float = 80.0
    degraded_invalid_pct: float = 5.0
    min_iv_pct: float = 1.0
    max_iv_pct: float = 500.0
    usd_mark_median_coin: float = 5.0  # a coin mark this large is a USD price
    fraction_iv_median: float = 3.0  # a median IV this small is a fraction, not percent
    # In the last hours Deribit marks sit at intrinsic (settlement TWAP, vega ~0): not a vol quote.
    min_hours_to_expiry: float = 2.0
    # Above this share of the fit's vega beyond the outer skew anchors, `wings_beyond_anchors` degrades the run.
    wings_beyond_anchors_vega_pct: float = 25.0
    # Marks that their own mark_iv does not reprice (Black-76, coin) within max(2 ticks, 1 % of the mark):
    # share of the usable rows above which the run is degraded / failed (issue mark_iv_mismatch).
    degraded_mark_iv_mismatch_pct: float = 5.0
    failed_mark_iv_mismatch_pct: float = 25.0
    mark_iv_tolerance_ticks: float = 2.0
    mark_iv_tolerance_pct: float = 1.0


@dataclass(frozen=True, slots=True, kw_only=True)
class RealismThresholds:
    """Guardrails of SPEC section 4; None disables a check."""

    min_mult: float = MIN_MULT
    max_mult: float = MAX_MULT
    max_mae_pct: float | None = MAX_MAE
    max_vega_mae_pct: float | None = MAX_VEGA_MAE
    # Fewer quotes / snapshots than this and the fit is noise: failed, with that as the reason.
    min_samples: int = 200  # harvested runs
    min_samples_live: int = 50  # a live run is one chain (3-10 DTE: ~50-300 quotes); as the policy's min_samples
    min_snapshots: int = 3  # harvested runs only
    # A band fitted on fewer quotes is reported and never applied; with more, it is guarded like the global.
    min_band_samples: int = 100
    # Live runs: a chain older than this (Deribit API or --replay) is degraded, with its age in the reason.
    max_chain_age_minutes: float = 60.0

    def __post_init__(self) -> None:
        for name in ("min_mult", "max_mult", "max_mae_pct", "max_vega_mae_pct", "max_chain_age_minutes"):
            v = getattr(self, name)
            if v is not None and (isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v)):
                raise InvalidInputError(f"realism `{name}` must be a finite number; got {v!r}")
        if not 0 < self.min_mult < self.max_mult:
            raise InvalidInputError(f"realism: 0 < min_mult < max_mult required; got {self.min_mult}, {self.max_mult}")
        for name in ("min_samples", "min_samples_live", "min_snapshots", "min_band_samples"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise InvalidInputError(f"realism `{name}` must be a non-negative integer; got {v!r}")
        if self.max_chain_age_minutes <= 0:
            raise InvalidInputError(f"realism `max_chain_age_minutes` must be positive; got {self.max_chain_age_minutes}")


@dataclass(frozen=True, slots=True, kw_only=True)
class HarvestConfig:
    """Where harvested snapshots live and which window to read."""

    data_root: Path = DEFAULT_DATA_DIR
    start_time: datetime | None = None
    end_time: datetime | None = None
    snapshot_step: timedelta | None = None  # None: inferred from the data
    max_snapshots: int | None = None
    rv_warmup: timedelta = timedelta(days=7)

    def __post_init__(self) -> None:
        # Naive times mean UTC; aware times in another zone are converted, so partition
        # pruning by UTC date and the window agree.
        for name in ("start_time", "end_time"):
            ts = getattr(self, name)
            if ts is not None:
                object.__setattr__(self, name, ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts.astimezone(UTC))
        object.__setattr__(self, "data_root", Path(self.data_root))
        if self.start_time and self.end_time and self.start_time >= self.end_time:
            raise InvalidInputError(f"`start_time` ({self.start_time}) must be before `end_time` ({self.end_time})")
        if self.max_snapshots is not None and self.max_snapshots < 1:
            raise InvalidInputError(f"`max_snapshots` must be positive; got {self.max_snapshots}")
        if self.snapshot_step is not None and self.snapshot_step.total_seconds() <= 0:
            raise InvalidInputError(f"`snapshot_step` must be positive; got {self.snapshot_step}")


@dataclass(frozen=True, slots=True, kw_only=True)
class CalibrationConfig:
    """Everything one calibration run needs (SPEC section 3)."""

    underlying: str
    source: str = "harvested"
    min_dte: float = 3.0
    max_dte: float = 10.0
    bands: tuple[Band, ...] = DEFAULT_BANDS
    option_types: tuple[str, ...] | list[str] = field(default_factory=lambda: list(OPTION_TYPES))
    fit_skew: bool = True
    emit_recommended_vol_surface: bool = True
    max_samples: int | None = None
    # None: the currently applied global multiplier of the history file the caller hands the
    # run (`db_path=`), else 1.0 - resolved when a run starts (`resolve_multiplier_tested`).
    multiplier_tested: float | None = None
    multiplier_bounds: tuple[float, float] = (0.25, 4.0)
    lookback_days: float = 14.0
    harvest: HarvestConfig = field(default_factory=HarvestConfig)
    skew: SkewConfig = field(default_factory=SkewConfig)
    quality: QualityThresholds = field(default_factory=QualityThresholds)
    realism: RealismThresholds = field(default_factory=RealismThresholds)
    min_tick_coin: float = MIN_TICK_COIN
    replay: bool = False

    @property
    def multiplier_tested_value(self) -> float:
        """`multiplier_tested` as a number: the resolved value, 1.0 for an engine called unresolved.

        One name for one thing: the field, this value and `resolve_multiplier_tested` all spell
        `multiplier_tested`, as the JSON and the history table do.
        """
        return 1.0 if self.multiplier_tested is None else float(self.multiplier_tested)

    def __post_init__(self) -> None:
        # Accept what callers naturally pass: lists or tuples, bands as mappings.
        object.__setattr__(self, "option_types", [str(t).upper() for t in self.option_types])
        try:
            bands = tuple(b if isinstance(b, Band) else Band(**dict(b)) for b in self.bands)  # type: ignore[arg-type]
        except TypeError as e:
            raise InvalidInputError(f"`bands` entries need name, dte_min, dte_max: {e}") from e
        object.__setattr__(self, "bands", bands)
        for name in ("min_dte", "max_dte", "lookback_days"):
            if not math.isfinite(getattr(self, name)):
                raise InvalidInputError(f"`{name}` must be a finite number; got {getattr(self, name)}")
        if self.lookback_days > MAX_LOOKBACK_DAYS:
            raise InvalidInputError(f"`lookback_days` must be at most {MAX_LOOKBACK_DAYS:g}; got {self.lookback_days}")
        if self.underlying not in UNDERLYINGS:
            raise InvalidInputError(
                f"`underlying` must be one of {', '.join(UNDERLYINGS)}; got {self.underlying!r}"
            )
        if self.source not in ("harvested", "live"):
            raise InvalidInputError(f"`source` must be 'harvested' or 'live'; got {self.source!r}")
        if self.min_dte < 0:
            raise InvalidInputError(f"`min_dte` must be >= 0; got {self.min_dte}")
        if self.min_dte > self.max_dte:
            raise InvalidInputError(
                f"`min_dte` ({self.min_dte}) must not exceed `max_dte` ({self.max_dte})"
            )
        bad = [t for t in self.option_types if t not in OPTION_TYPES]
        if bad or not self.option_types:
            raise InvalidInputError(f"`option_types` must be a non-empty subset of C,P; got {self.option_types}")
        if self.max_samples is not None and self.max_samples < 1:
            raise InvalidInputError(f"`max_samples` must be positive; got {self.max_samples}")
        if self.multiplier_tested is not None and not self.multiplier_tested > 0:
            raise InvalidInputError(f"`multiplier_tested` must be positive; got {self.multiplier_tested}")
        lo, hi = self.multiplier_bounds
        if not 0 < lo < hi:
            raise InvalidInputError(f"`multiplier_bounds` must satisfy 0 < lo < hi; got {self.multiplier_bounds}")
        if self.lookback_days <= 0:
            raise InvalidInputError(f"`lookback_days` must be positive; got {self.lookback_days}")


@dataclass(frozen=True, slots=True, kw_only=True)
class PolicyConfig:
    """Update policy for live runs (SPEC section 5)."""

    ewma_alpha: float = 0.3  # weight of the newest live recommendation
    deadband: float = 0.02  # skip when |smoothed - applied| is below this
    max_step: float = 0.10  # largest change of a multiplier per apply
    cooldown_minutes: float = 60.0
    min_samples: int = 50
    max_vega_mae_pct: float = 50.0
    min_multiplier: float = MIN_MULT  # clamp range: the realism range unless tuned
    max_multiplier: float = MAX_MULT

    def __post_init__(self) -> None:
        if not 0 < self.ewma_alpha <= 1:
            raise InvalidInputError(f"policy `ewma_alpha` must be in (0, 1]; got {self.ewma_alpha}")
        if self.deadband < 0 or self.max_step <= 0 or self.cooldown_minutes < 0:
            raise InvalidInputError("policy: deadband >= 0, max_step > 0, cooldown_minutes >= 0 required")
        if not 0 < self.min_multiplier < self.max_multiplier:
            raise InvalidInputError("policy: 0 < min_multiplier < max_multiplier required")


ALERT_STATUSES: tuple[str, ...] = ("ok", "degraded", "failed")


@dataclass(frozen=True, slots=True, kw_only=True)
class AlertsConfig:
    """`[alerts]`: POST a JSON payload to a webhook after a run with one of these statuses is recorded."""

    webhook_url: str | None = None  # None: no alerts
    on: tuple[str, ...] = ("failed", "degraded")
    timeout_s: float = 5.0  # per attempt
    retries: int = 2  # further attempts after the first (connection errors, timeouts, 429 and 5xx)
    backoff_s: float = 1.0  # wait before the first retry, doubled for each next one

    def __post_init__(self) -> None:
        if self.webhook_url == "":  # an empty URL means "off", as leaving it out does
            object.__setattr__(self, "webhook_url", None)
        on = (self.on,) if isinstance(self.on, str) else self.on
        object.__setattr__(self, "on", tuple(str(s).lower() for s in on))
        bad = [s for s in self.on if s not in ALERT_STATUSES]
        if bad:
            raise InvalidInputError(f"alerts `on` must hold statuses from {', '.join(ALERT_STATUSES)}; got {bad}")
        if self.webhook_url is not None and not str(self.webhook_url).startswith(("http://", "https://")):
            raise InvalidInputError(f"alerts `webhook_url` must be an http:// or https:// URL; got {self.webhook_url!r}")
        if not (isinstance(self.timeout_s, int | float) and math.isfinite(self.timeout_s) and self.timeout_s > 0):
            raise InvalidInputError(f"alerts `timeout_s` must be a positive number of seconds; got {self.timeout_s!r}")
        if isinstance(self.retries, bool) or not isinstance(self.retries, int) or not 0 <= self.retries <= 10:
            raise InvalidInputError(f"alerts `retries` must be an integer from 0 to 10; got {self.retries!r}")
        if not (isinstance(self.backoff_s, int | float) and 0 <= self.backoff_s <= 60):
            raise InvalidInputError(f"alerts `backoff_s` must be 0-60 seconds; got {self.backoff_s!r}")

    @property
    def enabled(self) -> bool:
        return bool(self.webhook_url) and bool(self.on)


@dataclass(frozen=True, slots=True, kw_only=True)
class Settings:
    """User-tunable settings loaded from `calib.toml` (all optional)."""

    bands: tuple[Band, ...] = DEFAULT_BANDS
    skew: SkewConfig = field(default_factory=SkewConfig)
    quality: QualityThresholds = field(default_factory=QualityThresholds)
    realism: RealismThresholds = field(default_factory=RealismThresholds)
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    multiplier_bounds: tuple[float, float] = (0.25, 4.0)
    alerts: AlertsConfig = field(default_factory=AlertsConfig)
    source_path: str | None = None

    def calibration_config(self, underlying: str, **run: Any) -> CalibrationConfig:
        """The one `Settings -> CalibrationConfig` builder: the settings' bands, skew, quality and realism
        thresholds and multiplier bounds, plus the run's own fields (`source`, DTE range, harvest, ...).

        Every run kind builds its config here (auto-calibrate, calibrate-live, backtest, the demo
        history), so a new setting reaches all of them at once. Raises InvalidInputError.
        """
        return CalibrationConfig(underlying=underlying, bands=self.bands, skew=self.skew, quality=self.quality,
                                 realism=self.realism, multiplier_bounds=self.multiplier_bounds, **run)


def _build(cls: type, table: dict[str, Any], where: str) -> Any:
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(table) - known)
    if unknown:
        raise InvalidInputError(f"{where}: unknown keys {unknown}; known: {sorted(known)}")
    kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in table.items()}
    try:
        return cls(**kwargs)
    except TypeError as e:
        raise InvalidInputError(f"{where}: {e}") from e


def config_path() -> Path:
    """The settings file in force: `$CALIB_CONFIG`, else `./calib.toml`."""
    return Path(os.environ.get("CALIB_CONFIG", "calib.toml"))


def load_settings(path: Path | None = None) -> Settings:
    """Read `calib.toml` (missing file: built-in defaults). Raises InvalidInputError on bad keys."""
    path = path or config_path()
    if not path.exists():
        return Settings()
    try:
        doc = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise InvalidInputError(f"cannot read settings file {path}: {e}") from e
    s = Settings(source_path=str(path))
    if "bands" in doc:
        bands = tuple(_build(Band, b, f"{path} [[bands]]") for b in doc["bands"])
        s = replace(s, bands=bands)
    for key, cls in (("skew", SkewConfig), ("quality", QualityThresholds),
                     ("realism", RealismThresholds), ("policy", PolicyConfig), ("alerts", AlertsConfig)):
        if key in doc:
            s = replace(s, **{key: _build(cls, doc[key], f"{path} [{key}]")})
    if "multiplier_bounds" in doc:
        lo, hi = doc["multiplier_bounds"]
        s = replace(s, multiplier_bounds=(float(lo), float(hi)))
    return s


def parse_utc(text: str | None, name: str = "--as-of") -> datetime | None:
    """An ISO-8601 time as an aware UTC datetime (naive means UTC; `Z` allowed); None stays None.

    Raises InvalidInputError naming the option `name` for text that is no time, or a time
    so early that the window and its RV warm-up (ten years back) would not be representable.
    """
    if text is None:
        return None
    try:
        ts = datetime.fromisoformat(text.replace("Z", "+00:00"))
        ts = ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts.astimezone(UTC)
        ts - timedelta(days=3660)  # the window and its RV warm-up must stay representable
    except (ValueError, OverflowError):
        raise InvalidInputError(f"`{name}` must be an ISO-8601 time after year 10, such as 2023-04-14T12:00:00Z; "
                                f"got {text!r}") from None
    return ts

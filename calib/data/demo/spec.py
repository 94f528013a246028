"""What a demo harvest is asked for and what it wrote (`DemoSpec`, `DemoSummary`), the scenarios and their constants."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from calib._typing import UNDERLYINGS
from calib.config import DAYS_PER_YEAR
from calib.errors import InvalidInputError

SCENARIOS: tuple[str, ...] = (
    "normal", "vol_shock", "usd_marks", "iv_fraction", "no_mark_iv", "no_index",
    "missing_required", "outage", "truncated_file", "mult_at_bound", "drift", "flat",
)  # fmt: skip
TRUTH_SCENARIOS: tuple[str, ...] = ("drift", "flat")  # scenarios whose IV / RV_7d is a known multiplier
DRIFT_FROM, DRIFT_TO, FLAT_MULTIPLIER = 0.95, 1.35, 1.15
FilesPer = Literal["day", "snapshot"]

MS_PER_DAY = 86_400_000
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MS_PER_YEAR = DAYS_PER_YEAR * MS_PER_DAY
WARMUP_DAYS = 8.0  # hidden history before the first snapshot: RV_7d is defined from the start
LOOKBACK_DAYS = 14.0  # the window the outage / truncated-file pathologies aim at
VOL_SHOCK_LEAD_DAYS = 12.0  # vol_shock: realized vol x3 from this long before `end`
VOL_SHOCK_FACTOR = 3.0
FREEZE_LEAD_DAYS = 20.0  # mult_at_bound: index vol x0.2 from this long before `end`
FREEZE_FACTOR = 0.2
ZERO_MARK_COIN = 2e-5  # below this, near expiry, Deribit shows mark_price 0.0
ZERO_MARK_MAX_DTE = 1.0
MAX_SMILE_RATIO = 3.0
KIND_DAILY, KIND_WEEKLY, KIND_MONTHLY, KIND_QUARTERLY = 0, 1, 2, 3


@dataclass(frozen=True, slots=True, kw_only=True)
class DemoSpec:
    """What to generate.

    Parameters
    ----------
    underlyings : subset of ``("BTC", "ETH")``.
    end : last snapshot time (tz-aware, UTC), inclusive.
    days : history length in days (lookback 14 + RV warm-up 7 + margin by default).
    step_minutes : snapshot spacing in minutes.
    seed : seed of every random draw; the same spec gives the same data.
    scenario : one of `SCENARIOS`.
    files_per : ``"day"`` (one file per UTC date partition) or ``"snapshot"``.
    max_instruments : cap on instruments per snapshot (the nearest to ATM in
        standardized distance are kept); None keeps the full Deribit-like chain.
    """

    underlyings: tuple[str, ...] = ("BTC", "ETH")
    end: datetime
    days: float = 22.0
    step_minutes: float = 60.0
    seed: int = 7
    scenario: str = "normal"
    files_per: FilesPer = "day"
    max_instruments: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "underlyings", tuple(self.underlyings))  # accept lists
        und_ok = set(self.underlyings) <= set(UNDERLYINGS) and len(set(self.underlyings)) == len(self.underlyings)
        checks = (
            (und_ok and bool(self.underlyings),
             f"`underlyings` must be distinct values of {', '.join(UNDERLYINGS)}; got {self.underlyings}"),
            (self.end.utcoffset() is not None, f"`end` must be timezone-aware (UTC); got naive {self.end!r}"),
            (self.days > 0, f"`days` must be positive; got {self.days}"),
            (self.seed >= 0, f"`seed` must be a non-negative integer; got {self.seed}"),
            (1.0 <= self.step_minutes <= 1440.0, f"`step_minutes` must be within 1-1440; got {self.step_minutes}"),
            (self.scenario in SCENARIOS, f"`scenario` must be one of {', '.join(SCENARIOS)}; got {self.scenario!r}"),
            (self.files_per in ("day", "snapshot"), f"`files_per` must be 'day' or 'snapshot'; got {self.files_per!r}"),
            (self.max_instruments is None or self.max_instruments >= 1,
             f"`max_instruments` must be positive or None; got {self.max_instruments}"),
        )  # fmt: skip
        for ok, message in checks:
            if not ok:
                raise InvalidInputError(message)


@dataclass(frozen=True, slots=True, kw_only=True)
class DemoSummary:
    """What `generate_demo_harvest` wrote (``rows`` counts rows written, truncated file included)."""

    files: int
    rows: int
    snapshots: int
    underlyings: tuple[str, ...]
    start: datetime
    end: datetime
    scenario: str
    data_root: Path

    def to_dict(self) -> dict[str, object]:
        """JSON-ready dict: times as ISO-8601 UTC strings, the root as a string."""
        d = asdict(self)
        return {**d, "underlyings": list(self.underlyings), "start": self.start.isoformat(),
                "end": self.end.isoformat(), "data_root": str(self.data_root)}  # fmt: skip

    def summary(self, out: Path, elapsed_s: float) -> str:
        """The line `calib demo-data` prints."""
        return (f"Wrote {self.rows:,} quotes in {self.snapshots:,} snapshots ({self.files} files) for "
                f"{', '.join(self.underlyings)} to {out} [{self.scenario}] in {elapsed_s:.1f} s")

"""A populated demo history file in one step (`calib demo-db`).

`populate_demo_db` generates synthetic harvests with `calib.data.demo` (a
normal market for BTC and ETH, plus pathological BTC harvests), records a
series of auto-calibrations over time through the same library calls as
`calib auto-calibrate`, then a few live replays that the update policy
applies or skips as `calib calibrate-live --replay` would, and one
Force-Apply Latest. The result is a realistic DuckDB file for the app, the
README and tests: OK, Degraded and Failed auto-calibrations; applied and
skipped live runs; applied multipliers written only by the policy and
Force-Apply.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from calib._typing import UNDERLYINGS
from calib.calibration import run_historical_calibration_from_harvest
from calib.config import CalibrationConfig, HarvestConfig, Settings, load_settings
from calib.data.demo import DemoSpec, generate_demo_harvest
from calib.data.layout import list_parquet_files
from calib.data.reader import read_harvest
from calib.errors import InvalidInputError
from calib.live import ForceApplyResult, calibrate_live_and_record, force_apply_latest
from calib.store.applied import applied_global
from calib.store.history import record_run

Progress = Callable[[str], None]

NORMAL_DAYS = 10.0  # 7 days of RV warm-up are simulated before the first snapshot
AUTO_LOOKBACK_DAYS = 2.0
AUTO_STEP = timedelta(hours=12)
AUTO_RUNS = {"BTC": 8, "ETH": 4}  # auto-calibrations over the normal harvest, one per AUTO_STEP
AUTO_MAX_SAMPLES = 20_000
LIVE_SNAPSHOTS = {"BTC": 4, "ETH": 2}  # live replays of the newest hourly snapshots
# Pathological BTC harvests: scenario -> (days, hours before the demo end, lookback days).
PATHOLOGIES: dict[str, tuple[float, float, float]] = {
    "usd_marks": (3.0, 30.0, AUTO_LOOKBACK_DAYS),  # marks in USD, not coin: data quality failed
    "mult_at_bound": (3.0, 66.0, AUTO_LOOKBACK_DAYS),  # frozen index: multiplier pinned at 4.0, failed
    "outage": (4.0, 18.0, 4.0),  # half the window missing: degraded
}


@dataclass(frozen=True, slots=True, kw_only=True)
class DemoDbSummary:
    """What `populate_demo_db` wrote."""

    db_path: Path
    data_root: Path
    harvests: dict[str, Path]  # scenario -> harvest root
    auto_runs: dict[str, int]  # status -> count of harvested runs
    live_runs: dict[str, int]  # policy decision -> count of live runs
    forced: ForceApplyResult | None
    applied_global: dict[str, float | None] = field(default_factory=dict)  # underlying -> multiplier
    elapsed_s: float = 0.0

    @property
    def n_runs(self) -> int:
        return sum(self.auto_runs.values()) + sum(self.live_runs.values())

    def summary(self, db: Path, *, default_db: Path) -> str:
        """The two lines `calib demo-db` prints: what was written, then how to open the dashboard."""
        auto = ", ".join(f"{n} {k}" for k, n in self.auto_runs.items())
        live = ", ".join(f"{n} {k}" for k, n in self.live_runs.items())
        forced = f"; Force-Apply set {self.forced.multiplier:.4f}" if self.forced else ""
        prefix = "" if db == default_db else f"CALIB_DB={db} "
        return (f"Wrote {self.n_runs} runs to {db} in {self.elapsed_s:.1f} s: auto-calibrate {auto}; "
                f"live {live}{forced}\nOpen the dashboard: {prefix}streamlit run app.py")


def _has_harvest(root: Path, underlyings: tuple[str, ...]) -> bool:
    return all(list_parquet_files(root, u) for u in underlyings)


def _harvest(root: Path, spec: DemoSpec, say: Progress) -> Path:
    if _has_harvest(root, spec.underlyings):
        say(f"reusing demo harvest {root}")
    else:
        s = generate_demo_harvest(root, spec)
        say(f"generated {spec.scenario} harvest: {s.rows:,} quotes in {s.snapshots:,} snapshots -> {root}")
    return root


def _config(settings: Settings, underlying: str, root: Path, *, source: str, end: datetime | None = None,
            lookback_days: float = AUTO_LOOKBACK_DAYS, tested: float | None = None) -> CalibrationConfig:
    return settings.calibration_config(
        underlying, source=source, lookback_days=lookback_days,
        max_samples=AUTO_MAX_SAMPLES if source == "harvested" else None,
        multiplier_tested=tested if tested is not None else 1.0,
        replay=source == "live", harvest=HarvestConfig(data_root=root, end_time=end),
    )


def populate_demo_db(
    db_path: Path,
    data_root: Path,
    *,
    now: datetime | None = None,
    underlyings: tuple[str, ...] = UNDERLYINGS,
    overwrite: bool = False,
    progress: Progress | None = None,
) -> DemoDbSummary:
    """Write a demo history file at `db_path` from demo harvests under `data_root`.

    Parameters
    ----------
    db_path
        DuckDB history file to create. An existing file is an error unless
        `overwrite` (then it is deleted first).
    data_root
        Folder for the demo harvests: `<data_root>/<scenario>/<UNDERLYING>/...`.
        Harvests already there are reused, so a second call is faster.
    now
        End of the demo market (default: now, floored to the hour). The
        newest snapshot is what the live replays score.
    underlyings
        Underlyings of the normal market (pathologies are BTC only).
    progress
        Called with one line per step (the CLI prints them on stderr).

    Notes
    -----
    Auto-calibrations end their windows every 12 hours across the normal
    harvest (2-day lookback), with the pathological runs in between. Live
    replays score the newest hourly snapshots one by one: with the default
    policy the first applies (one max step), the later ones are skipped
    (cooldown or deadband), one BTC replay of the USD-marks harvest fails;
    a final Force-Apply Latest applies the newest BTC run's smoothed value.
    """
    t0 = time.perf_counter()
    say = progress or (lambda _msg: None)
    unknown = [u for u in underlyings if u not in UNDERLYINGS]
    if unknown or not underlyings:
        raise InvalidInputError(f"`underlyings` must be a non-empty subset of {', '.join(UNDERLYINGS)}; got {underlyings}")
    db_path, data_root = Path(db_path), Path(data_root)
    if db_path.exists():
        if not overwrite:
            raise InvalidInputError(f"{db_path} already exists: choose another --db or pass --overwrite")
        for p in (db_path, db_path.with_name(db_path.name + ".wal")):
            p.unlink(missing_ok=True)
    end = (now or datetime.now(UTC)).astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    settings = load_settings()

    harvests = {"normal": _harvest(data_root / "normal", DemoSpec(underlyings=underlyings, end=end, days=NORMAL_DAYS),
                                   say)}
    btc = "BTC" in underlyings
    if btc:
        for scenario, (days, lead_h, _) in PATHOLOGIES.items():
            spec = DemoSpec(underlyings=("BTC",), end=end - timedelta(hours=lead_h), days=days, scenario=scenario)
            harvests[scenario] = _harvest(data_root / scenario, spec, say)

    # Auto-calibrations in window-end order, as a trader running `calib auto-calibrate --as-of ...` would.
    plan: list[tuple[datetime, str, str]] = []  # (window end, underlying, scenario)
    for und in underlyings:
        plan += [(end - AUTO_STEP * k, und, "normal") for k in range(AUTO_RUNS.get(und, 4))]
    if btc:
        plan += [(end - timedelta(hours=lead_h), "BTC", scenario) for scenario, (_, lead_h, _) in PATHOLOGIES.items()]
    plan.sort(key=lambda p: (p[0], p[1], p[2]))
    auto: dict[str, int] = {}
    for as_of, und, scenario in plan:
        lookback = PATHOLOGIES[scenario][2] if scenario in PATHOLOGIES else AUTO_LOOKBACK_DAYS
        config = _config(settings, und, harvests[scenario], source="harvested", end=as_of, lookback_days=lookback,
                         tested=applied_global(db_path, und))
        result = run_historical_calibration_from_harvest(config)
        record_run(db_path, result)
        auto[result.status] = auto.get(result.status, 0) + 1
        say(f"auto-calibrate {und} as of {as_of:%Y-%m-%d %H:%M}Z [{scenario}]: {result.status} - {result.reason}")

    # Live replays: the newest snapshots one by one, the policy deciding each time.
    live: dict[str, int] = {}
    for und in underlyings:
        root = harvests["normal"]
        n = LIVE_SNAPSHOTS.get(und, 2)
        for k in range(n - 1, -1, -1):
            ts = end - timedelta(hours=k)
            chain = read_harvest(root, und, window_start=ts, window_end=ts,
                                 warmup=HarvestConfig().rv_warmup)
            rec = calibrate_live_and_record(_config(settings, und, root, source="live"), db_path, settings.policy,
                                            chain=chain)
            live[rec.outcome.decision] = live.get(rec.outcome.decision, 0) + 1
            say(f"live replay {und} {ts:%Y-%m-%d %H:%M}Z: {rec.result.status}, "
                f"{rec.outcome.decision} - {rec.outcome.reason}")
            if und == "BTC" and k == n - 1 and btc:
                bad = calibrate_live_and_record(_config(settings, "BTC", harvests["usd_marks"], source="live"),
                                                db_path, settings.policy)
                live[bad.outcome.decision] = live.get(bad.outcome.decision, 0) + 1
                say(f"live replay BTC [usd_marks]: {bad.result.status}, {bad.outcome.decision} - {bad.outcome.reason}")

    forced = None
    if btc:
        forced = force_apply_latest(db_path, "BTC")
        say(f"force-apply BTC: run {forced.run_id} -> global {forced.multiplier:.4f}")
    applied = {u: applied_global(db_path, u) for u in underlyings}
    return DemoDbSummary(db_path=db_path, data_root=data_root, harvests=harvests, auto_runs=auto, live_runs=live,
                         forced=forced, applied_global=applied, elapsed_s=time.perf_counter() - t0)

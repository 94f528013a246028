"""calib command line: a thin Typer shell over the calib library.

Each command parses its options, calls one library function and renders the
result. Library errors become one `Error: ...` line on stderr and the exit
codes of SPEC section 7: 0 ok/degraded, 3 failed (recorded), 2 usage error,
1 could not record.
"""

from __future__ import annotations

import json
import os
import sys
import time
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

if __name__ == "__main__":  # `python cli.py`: the console script's process settings (calib.entry)
    from calib.process import tune_process  # first: its settings must precede the numpy import

    tune_process()

import typer
from typer.main import get_current_context

from calib.config import (
    DEFAULT_DATA_DIR,
    DEFAULT_DB,
    HarvestConfig,
    load_settings,
    parse_utc,
)
from calib.errors import (
    CalibError,
    InvalidInputError,
    NoDataError,
    PolicyError,
    SourceError,
)

if TYPE_CHECKING:  # the engine (numpy) loads with a run, not with `calib --help`
    from calib.engine.result import CalibrationResult

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Calibrate the synthetic vol model (RV_7d x multiplier x skew) against Deribit marks.",
    pretty_exceptions_enable=False,
    # Plain Click help and errors: rich's help formatter cost ~0.14 s of every `calib --help` (imports).
    rich_markup_mode=None,
)

EXIT_OK, EXIT_NOT_RECORDED, EXIT_USAGE, EXIT_FAILED = 0, 1, 2, 3


class Underlying(StrEnum):
    BTC = "BTC"
    ETH = "ETH"


class Source(StrEnum):
    harvested = "harvested"
    live = "live"


DbOpt = Annotated[Path, typer.Option("--db", envvar="CALIB_DB", help="History DuckDB file (env CALIB_DB).")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON document on stdout.")]
UndOpt = Annotated[Underlying, typer.Option("--underlying", "-u", case_sensitive=False, help="Underlying asset.")]


def _json_requested() -> bool:
    """Whether the running command was given --json (its `json_out` parameter)."""
    ctx = get_current_context(silent=True)
    return bool(ctx is not None and ctx.params.get("json_out"))


def _err(msg: str, code: int | None = None) -> None:
    """One "Error: ..." line on stderr; with --json also {"error", "exit_code"} on stdout for scripts."""
    typer.echo(f"Error: {msg}", err=True)
    if _json_requested():
        typer.echo(json.dumps({"error": msg, "exit_code": code}))


# Config fields a CLI user never typed -> the flags they did (CalibrationConfig names its fields).
_FLAG_NAMES = {"`min_dte`": "`--dte-min`", "`max_dte`": "`--dte-max`", "`lookback_days`": "`--lookback-days`",
               "`max_samples`": "`--max-samples`", "`option_types`": "`--option-types`",
               "`start_multiplier`": "`--start-multiplier`"}


def _flag_names(msg: str) -> str:
    for field, flag in _FLAG_NAMES.items():
        msg = msg.replace(field, flag)
    return msg


def _fail(e: Exception) -> NoReturn:
    code = EXIT_USAGE if isinstance(e, InvalidInputError | NoDataError | PolicyError) else EXIT_NOT_RECORDED
    _err(_flag_names(str(e)) if isinstance(e, InvalidInputError) else str(e), code)
    raise typer.Exit(code=code) from None


def _require_history(db: Path) -> None:
    """The one convention for a missing history file (apply, history, sql, state): exit 2 with a hint."""
    if not db.exists():
        _err(f"history file {db} does not exist: run `calib demo-db` for a demo history, or record a run with "
             "`calib calibrate-live` or `calib auto-calibrate` (or check --db / CALIB_DB)", EXIT_USAGE)
        raise typer.Exit(code=EXIT_USAGE)


def _require_data_dir(data_dir: Path) -> None:
    if not data_dir.is_dir():
        _err(f"data directory {data_dir} does not exist: run `calib demo-data` or `calib harvest` first", EXIT_USAGE)
        raise typer.Exit(code=EXIT_USAGE)


def _check_writable(db: Path, *, schema: bool = True) -> None:
    """Before the work: it could not be recorded (unwritable, empty, newer schema): exit 1 now.

    auto-calibrate and calibrate-live leave this to the library run, which checks on the
    connection that also reads the applied multiplier (one open of the file fewer)."""
    from calib.store.connection import check_writable

    try:
        check_writable(db, schema=schema)
    except CalibError as e:
        _fail(e)


def _progress(msg: str) -> None:
    typer.echo(f"... {msg}", err=True)


def _parse_ts(text: str | None, name: str = "--as-of") -> datetime | None:
    try:
        return parse_utc(text, name)
    except InvalidInputError as e:
        _fail(e)


def _settings() -> Any:
    try:
        return load_settings()
    except CalibError as e:
        _fail(e)


def _emit(result: CalibrationResult, d: dict[str, Any], db: Path, json_out: bool) -> None:
    """`d` is `result.to_dict()` plus what the command adds (the live run's policy and applied flag)."""
    warning = result.failure_warning()
    if json_out:
        typer.echo(json.dumps(d, allow_nan=False))
        if warning:
            typer.echo(warning, err=True)
    else:
        typer.echo(result.summary(db, policy=d.get("policy")))
        if warning:
            typer.echo("\n" + warning)


def _alert(settings: Any, d: dict[str, Any]) -> None:
    """After the run is recorded and shown: the `[alerts]` webhook, if due. Never changes the exit code."""
    if not settings.alerts.enabled or d.get("status") not in settings.alerts.on:
        return
    from calib.alerts import notify_run

    notify_run(settings.alerts, d, log=lambda line: typer.echo(line, err=True))


def _option_types(text: str) -> tuple[str, ...]:
    return tuple(t.strip().upper() for t in text.split(",") if t.strip())


@app.command("auto-calibrate")
def auto_calibrate(
    underlying: UndOpt,
    dte_min: Annotated[float, typer.Option(help="Smallest days to expiry in the global fit.")] = 3.0,
    dte_max: Annotated[float, typer.Option(help="Largest days to expiry in the global fit.")] = 10.0,
    lookback_days: Annotated[float, typer.Option(help="Window length in days, ending at --as-of or now.")] = 14.0,
    as_of: Annotated[str | None, typer.Option(help="End the window at this ISO-8601 UTC time.")] = None,
    max_samples: Annotated[int | None, typer.Option(help="Deterministic subsample of at most N quotes.")] = None,
    data_dir: Annotated[Path, typer.Option(help="Harvested data root.")] = DEFAULT_DATA_DIR,
    option_types: Annotated[str, typer.Option(help="Option types to use, e.g. C,P or P.")] = "C,P",
    db: DbOpt = DEFAULT_DB,
    json_out: JsonOpt = False,
) -> None:
    """Calibrate on a harvested lookback window and record the graded run (never applied)."""
    settings = _settings()
    end = _parse_ts(as_of)
    _require_data_dir(data_dir)
    # After the cheap checks: a usage error loads neither the engine nor polars.
    from calib.auto import auto_calibrate as run_auto_calibration
    from calib.auto import auto_calibration_config

    try:  # auto_calibrate refuses a history file it could not record in before any work
        config = auto_calibration_config(
            underlying.value, data_dir=data_dir, settings=settings, as_of=end, lookback_days=lookback_days,
            dte_min=dte_min, dte_max=dte_max, option_types=_option_types(option_types), max_samples=max_samples)
        run = run_auto_calibration(config, db, progress=None if json_out else _progress)
    except CalibError as e:
        _fail(e)
    d = run.result.to_dict()
    _emit(run.result, d, db, json_out)
    if not json_out:
        typer.echo(f"({run.calibration_s:.2f} s)", err=True)
    _alert(settings, d)
    raise typer.Exit(code=EXIT_FAILED if run.result.status == "failed" else EXIT_OK)


@app.command("calibrate-live")
def calibrate_live(
    underlying: UndOpt,
    replay: Annotated[Path | None, typer.Option(help="Use the newest harvested snapshot under this data dir.")] = None,
    dte_min: Annotated[float, typer.Option(help="Smallest days to expiry in the global fit.")] = 3.0,
    dte_max: Annotated[float, typer.Option(help="Largest days to expiry in the global fit.")] = 10.0,
    base_url: Annotated[str, typer.Option(envvar="CALIB_DERIBIT_URL", help="Deribit API base URL.")] = (
        "https://www.deribit.com/api/v2"),
    source_timeout: Annotated[float, typer.Option(
        min=0.1, envvar="CALIB_SOURCE_TIMEOUT_S",
        help="Give up on Deribit after this many seconds in total (retries included); the failure is recorded.",
    )] = 15.0,
    db: DbOpt = DEFAULT_DB,
    json_out: JsonOpt = False,
) -> None:
    """Score the current chain at the applied multiplier; the update policy decides whether to apply."""
    settings = _settings()
    if replay is not None and not replay.is_dir():
        _err(f"replay directory {replay} does not exist", EXIT_USAGE)
        raise typer.Exit(code=EXIT_USAGE)
    from calib.live import calibrate_live_and_record

    try:  # both paths refuse a history file they could not record in before any work (and the network)
        config = settings.calibration_config(
            underlying.value, source="live", min_dte=dte_min, max_dte=dte_max, replay=replay is not None,
            harvest=HarvestConfig(data_root=replay or DEFAULT_DATA_DIR),
        )
        if replay is None:  # an unreachable exchange is recorded as a failed live run (exit 3)
            from calib.live_outage import calibrate_live_from_exchange

            rec = calibrate_live_from_exchange(config, db, settings.policy, base_url=base_url, budget_s=source_timeout)
        else:
            rec = calibrate_live_and_record(config, db, settings.policy)
    except (CalibError, SourceError) as e:
        _fail(e)
    d = rec.to_dict()
    _emit(rec.result, d, db, json_out)
    _alert(settings, d)
    raise typer.Exit(code=EXIT_FAILED if rec.result.status == "failed" else EXIT_OK)


@app.command("apply")
def apply_cmd(
    underlying: UndOpt,
    force: Annotated[bool, typer.Option("--force", help="Force-Apply the newest live run's smoothed values.")] = False,
    db: DbOpt = DEFAULT_DB,
    json_out: JsonOpt = False,
) -> None:
    """Force-Apply Latest: apply the newest live run's smoothed multipliers ("Forced by user")."""
    if not force:
        _err("only `calib apply --force` exists: the policy applies runs itself; --force overrides it", EXIT_USAGE)
        raise typer.Exit(code=EXIT_USAGE)
    _require_history(db)
    _check_writable(db, schema=False)  # the path; the write's own open refuses a newer schema (one open, not two)
    from calib.live import force_apply_latest  # after the checks: a refusal loads no engine

    try:
        res = force_apply_latest(db, underlying.value)
    except CalibError as e:
        _fail(e)
    typer.echo(json.dumps(res.to_dict()) if json_out else res.summary())


@app.command("state")
def state_cmd(underlying: UndOpt, db: DbOpt = DEFAULT_DB, json_out: JsonOpt = False) -> None:
    """Show the applied multipliers (the one source of truth the synthetic engine uses)."""
    _require_history(db)  # before the import: a missing file loads no polars or DuckDB
    from calib.queries import applied_state

    try:
        st = applied_state(db, underlying.value)
    except CalibError as e:
        _fail(e)
    typer.echo(json.dumps(st.to_dict()) if json_out else st.summary())


@app.command("history")
def history_cmd(
    underlying: Annotated[Underlying | None, typer.Option("--underlying", "-u", case_sensitive=False,
                                                          help="Only this underlying.")] = None,
    source: Annotated[Source | None, typer.Option(help="Only harvested or only live runs.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=100_000, help="Number of runs.")] = 20,
    db: DbOpt = DEFAULT_DB,
    json_out: JsonOpt = False,
) -> None:
    """List recent calibration runs, newest first."""
    _require_history(db)
    from calib.queries import json_records, list_runs
    from calib.ui.text import history_text

    try:
        df = list_runs(db, underlying=underlying.value if underlying else None,
                       source=source.value if source else None, limit=limit)
    except CalibError as e:
        _fail(e)
    # --json: the same records as GET /api/calibration/history
    typer.echo(json.dumps(json_records(df), allow_nan=False) if json_out else history_text(df))


@app.command("sql")
def sql_cmd(query: Annotated[str, typer.Argument(help="One read-only SQL statement.")],
            db: DbOpt = DEFAULT_DB, json_out: JsonOpt = False) -> None:
    """Run a read-only SQL query against the history file and print a table."""
    _require_history(db)
    from calib.engine.result import clean_json
    from calib.queries import run_sql
    from calib.ui.text import frame_text

    try:
        df = run_sql(db, query)
    except CalibError as e:
        _fail(e)
    typer.echo(json.dumps(clean_json(df.to_dicts()), default=str, allow_nan=False) if json_out else frame_text(df))


@app.command("backtest")
def backtest_cmd(
    underlying: UndOpt,
    start: Annotated[str, typer.Option(help="First as-of time (ISO-8601 UTC).")],
    end: Annotated[str, typer.Option(help="As-of times stop before this (ISO-8601 UTC).")],
    step: Annotated[str, typer.Option(help="Time between as-of times: 1d, 6h, 30m, 1w.")] = "1d",
    data_dir: Annotated[Path, typer.Option(help="Harvested data root (shared storage for a cluster).")] = (
        DEFAULT_DATA_DIR),
    lookback_days: Annotated[float, typer.Option(help="Calibration window length in days.")] = 14.0,
    dte_min: Annotated[float, typer.Option(help="Smallest days to expiry in the global fit.")] = 3.0,
    dte_max: Annotated[float, typer.Option(help="Largest days to expiry in the global fit.")] = 10.0,
    horizon: Annotated[str, typer.Option(help="Out-of-sample horizon after each as-of time: 1d, 12h.")] = "1d",
    start_multiplier: Annotated[float, typer.Option(help="Applied multiplier at --start (global and bands).")] = 1.0,
    cluster: Annotated[str | None, typer.Option(help="Dask: 'local' (LocalCluster) or tcp://HOST:PORT; "
                                                     "default a local process pool.")] = None,
    workers: Annotated[int | None, typer.Option(help="Workers of the pool or LocalCluster (default: cores).")] = None,
    db: DbOpt = DEFAULT_DB,
    json_out: JsonOpt = False,
) -> None:
    """Walk-forward backtest: calibrate each window, replay the update policy, score out of sample."""
    from calib.backtest import BacktestConfig, parse_duration, run_backtest
    from calib.store.backtests import record_backtest
    from calib.ui.text import backtest_text, progress_line

    settings = _settings()
    t0, t1 = _parse_ts(start, "--start"), _parse_ts(end, "--end")
    _require_data_dir(data_dir)
    _check_writable(db)
    try:
        config = BacktestConfig(
            calibration=settings.calibration_config(
                underlying.value, source="harvested", min_dte=dte_min, max_dte=dte_max,
                lookback_days=lookback_days, harvest=HarvestConfig(data_root=data_dir)),
            start=t0, end=t1, step=parse_duration(step, name="--step"),  # type: ignore[arg-type]
            horizon=parse_duration(horizon, name="--horizon"), start_multiplier=start_multiplier,
            policy=settings.policy)
        progress = None if json_out else (lambda *a: typer.echo(progress_line(*a), err=True))
        result = run_backtest(config, cluster=cluster, workers=workers, progress=progress)
        record_backtest(db, result)
    except CalibError as e:
        _fail(e)
    typer.echo(json.dumps(result.to_dict(), allow_nan=False) if json_out else backtest_text(result, str(db)))


@app.command("serve")
def serve_cmd(
    host: Annotated[str, typer.Option(help="Bind address; anything but loopback needs CALIB_API_TOKEN.")] = (
        "127.0.0.1"),
    port: Annotated[int, typer.Option(help="TCP port (0: any free port).")] = 8765,
    db: DbOpt = DEFAULT_DB,
    retry_s: Annotated[float, typer.Option(min=0.0, help="Seconds a read retries while a writer holds the file "
                                                         "before answering 503.")] = 5.0,
) -> None:
    """Read-only HTTP JSON API: /api/calibration/state, /history, /runs/{run_id}, /healthz (GET only)."""
    from calib.server import TOKEN_ENV, ServeConfig, serve

    try:
        config = ServeConfig(db=db, host=host, port=port, token=os.environ.get(TOKEN_ENV) or None, retry_s=retry_s)
    except CalibError as e:
        _fail(e)
    auth = " (bearer token required)" if config.token else ""
    try:
        serve(config, on_ready=lambda url: typer.echo(
            f"calib serve: {url}/api/calibration/state?underlying=BTC reading {db}{auth}", err=True))
    except CalibError as e:  # the port is taken, the address is not this machine's
        _fail(e)


@app.command("demo-data")
def demo_data(
    out: Annotated[Path, typer.Option(help="Data root to write.")] = DEFAULT_DATA_DIR,
    days: Annotated[float, typer.Option(help="Days of history.")] = 22.0,
    step_minutes: Annotated[float, typer.Option(help="Minutes between snapshots.")] = 60.0,
    scenario: Annotated[str, typer.Option(help="normal, vol_shock, usd_marks, iv_fraction, no_mark_iv, no_index, "
                                                "missing_required, outage, truncated_file, mult_at_bound, drift, flat.")] = "normal",
    underlying: Annotated[list[Underlying] | None, typer.Option("--underlying", "-u", help="Repeatable.")] = None,
    end: Annotated[str | None, typer.Option(help="Last snapshot time (ISO-8601 UTC); default now.")] = None,
    seed: Annotated[int, typer.Option(help="Random seed (same seed, same data).")] = 7,
    files_per: Annotated[str, typer.Option(help="day (compact) or snapshot (like the harvester).")] = "day",
) -> None:
    """Write a realistic synthetic harvest (SPEC section 2 layout), optionally with a pathology."""
    from calib.data.demo import SCENARIOS, DemoSpec, generate_demo_harvest

    if scenario not in SCENARIOS:
        _err(f"`--scenario` must be one of {', '.join(SCENARIOS)}; got {scenario!r}", EXIT_USAGE)
        raise typer.Exit(code=EXIT_USAGE)
    end_ts = _parse_ts(end) or datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    unds = tuple(u.value for u in underlying) if underlying else ("BTC", "ETH")
    try:
        spec = DemoSpec(underlyings=unds, end=end_ts, days=days, step_minutes=step_minutes, seed=seed,
                        scenario=scenario, files_per=files_per)  # type: ignore[arg-type]
        t0 = time.perf_counter()
        summary = generate_demo_harvest(out, spec)
    except (CalibError, ValueError) as e:
        _fail(e)
    typer.echo(summary.summary(out, time.perf_counter() - t0))


@app.command("harvest")
def harvest_cmd(
    underlying: Annotated[list[Underlying], typer.Option("--underlying", "-u", case_sensitive=False,
                                                         help="Underlying to poll (repeatable).")],
    interval: Annotated[float, typer.Option(help="Seconds between snapshots.")] = 300.0,
    once: Annotated[bool, typer.Option("--once", help="Take one snapshot per underlying and stop.")] = False,
    data_dir: Annotated[Path, typer.Option(help="Harvested data root to write.")] = DEFAULT_DATA_DIR,
    base_url: Annotated[str, typer.Option(envvar="CALIB_DERIBIT_URL", help="Deribit API base URL.")] = (
        "https://www.deribit.com/api/v2"),
) -> None:
    """Poll Deribit's public book summary and index; one Parquet file per snapshot (Ctrl-C stops)."""
    from calib.sources.deribit import DeribitClient
    from calib.sources.harvester import retry_logger, run_harvester

    if interval <= 0:
        _err(f"`--interval` must be positive; got {interval}", EXIT_USAGE)
        raise typer.Exit(code=EXIT_USAGE)
    try:
        with DeribitClient(base_url=base_url, on_retry=retry_logger()) as client:
            summary = run_harvester(client, tuple(u.value for u in underlying), data_dir, interval, once=once)
    except CalibError as e:
        _fail(e)
    typer.echo(summary.describe())
    if once and summary.snapshots_written == 0:
        raise typer.Exit(code=EXIT_NOT_RECORDED)


@app.command("compact")
def compact_cmd(
    underlying: UndOpt,
    data_dir: Annotated[Path, typer.Option(help="Harvested data root.")] = DEFAULT_DATA_DIR,
    date: Annotated[str | None, typer.Option(help="Only this UTC day (YYYY-MM-DD); default every finished day.")] = None,
) -> None:
    """Merge each day's small snapshot files into one file, atomically (reads stay exact meanwhile)."""
    from calib.data.compact import compact_all, compact_day

    if not (data_dir / underlying.value).is_dir():
        _err(f"no harvested data for {underlying.value} under {data_dir}", EXIT_USAGE)
        raise typer.Exit(code=EXIT_USAGE)
    try:
        results = [compact_day(data_dir, underlying.value, date)] if date else compact_all(data_dir, underlying.value)
    except (CalibError, ValueError) as e:
        _fail(e)
    except OSError as e:  # listing or unlinking the partition itself (permissions, I/O error)
        _fail(CalibError(f"cannot compact {data_dir / underlying.value}: {e}"))
    for r in results:
        typer.echo(r.describe())
    if not results:
        typer.echo("Nothing to compact.")


@app.command("import-tardis")
def import_tardis_cmd(
    files: Annotated[list[Path], typer.Argument(help="Tardis options_chain CSV(.gz) files, in time order.")],
    underlying: UndOpt,
    every: Annotated[str, typer.Option(help="Snapshot interval: 30s, 5m, 1h or seconds.")] = "5m",
    data_dir: Annotated[Path, typer.Option(help="Harvested data root to write.")] = DEFAULT_DATA_DIR,
    index_file: Annotated[Path | None, typer.Option(help="Optional CSV with timestamp (us) and index_price.")] = None,
    json_out: JsonOpt = False,
) -> None:
    """Turn Tardis.dev options_chain history into harvested snapshots (streaming, bounded memory)."""
    from calib.data.tardis import import_tardis, parse_every

    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        _err(f"file(s) not found: {', '.join(missing)}", EXIT_USAGE)
        raise typer.Exit(code=EXIT_USAGE)
    try:
        # Without an index file leave index_price null: the reader then computes RV from the
        # nearest-expiry forward *and says so* (data quality degraded), instead of hiding it.
        res = import_tardis(files, underlying=underlying.value, every=parse_every(every), data_root=data_dir,
                            index_file=index_file, progress=_progress,
                            index_fallback="nearest_forward" if index_file else "none")
    except CalibError as e:
        _fail(e)
    typer.echo(json.dumps(res.to_dict()) if json_out else res.summary(data_dir, underlying.value))


@app.command("demo-db")
def demo_db_cmd(
    db: DbOpt = DEFAULT_DB,
    data_dir: Annotated[Path, typer.Option(help="Where the demo harvests are written (reused if present).")] = Path(
        "data/demo"),
    now: Annotated[str | None, typer.Option(help="Pretend 'now' is this ISO-8601 UTC time.")] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing history file.")] = False,
) -> None:
    """Fill a history file with a realistic mix of runs so the dashboard is populated at once."""
    from calib.demo_db import populate_demo_db

    try:
        summary = populate_demo_db(db, data_dir, now=_parse_ts(now), overwrite=overwrite, progress=_progress)
    except CalibError as e:
        _fail(e)
    typer.echo(summary.summary(db, default_db=DEFAULT_DB))


@app.command("bench")
def bench_cmd(
    sizes: Annotated[str, typer.Option(help="Window lengths, e.g. 1d,14d,90d,365d.")] = "1d,14d,90d,365d",
    repeat: Annotated[int, typer.Option(min=1, help="Runs per size; the fastest is shown.")] = 1,
    cache_dir: Annotated[Path, typer.Option(help="Where generated harvests are cached.")] = Path("data/bench"),
    layouts: Annotated[str, typer.Option(
        help="Harvest layouts: columns (expiry/strike/type stored), minimal (parsed from the name).")] = (
        "columns,minimal"),
    peers: Annotated[bool, typer.Option(
        "--peers", help="Also time the floor (python + polars read of the window) and the DuckDB SQL + scipy peer.")
    ] = False,
    peer_size: Annotated[str, typer.Option(help="Window of the peer comparison.")] = "14d",
    peer_rounds: Annotated[int, typer.Option(min=1, help="Interleaved rounds of the peer comparison.")] = 3,
    json_out: JsonOpt = False,
) -> None:
    """Benchmark auto-calibration end to end: rows/s, time per stage, peak memory; --peers adds the floor and DuckDB."""
    from calib.bench import main as bench_main

    argv = ["--sizes", sizes, "--repeat", str(repeat), "--cache-dir", str(cache_dir), "--layouts", layouts,
            *(["--peers", "--peer-size", peer_size, "--peer-rounds", str(peer_rounds)] if peers else [])]
    raise typer.Exit(code=bench_main([*argv, "--json"] if json_out else argv))


FAST_EXIT_ENV = "CALIB_FAST_EXIT"


def main() -> None:
    """Entry point (`calib` runs it through `calib.entry`): run the app, exit with its status.

    The interpreter exits normally (atexit hooks, logging shutdown, buffered
    handles closed). With `CALIB_FAST_EXIT=1` it ends with `os._exit` once
    stdout and stderr are flushed instead, skipping the teardown of numpy,
    polars and DuckDB (measured in notes/SCALING.md); safe only because every
    file calib writes is written atomically and closed and every DuckDB
    connection closed before a command returns.
    """
    try:
        app()
        code = 0
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        code = 130
    except SystemExit as e:
        code = _exit_code(e.code)
    if os.environ.get(FAST_EXIT_ENV) != "1":
        sys.exit(code)
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # closed or broken pipe: nothing more can be written
            pass
    os._exit(code)


def _exit_code(code: object) -> int:
    """What `sys.exit(code)` would end the process with (a message goes to stderr, status 1)."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    print(code, file=sys.stderr)
    return 1


if __name__ == "__main__":
    main()


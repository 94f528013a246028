"""Read-only queries over the history file, for the CLI (`history`, `state`, `sql`) and the app.

Each function opens a read-only connection, runs its query and closes it,
so a writer (the CLI) is never blocked for longer than one read.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb
import polars as pl

from calib.errors import InvalidInputError, StoreError
from calib.store.connection import connect


def _frame(con: duckdb.DuckDBPyConnection, sql: str, params: list[Any] | None = None) -> pl.DataFrame:
    return con.sql(sql, params=params or []).pl()


def _has_table(con: duckdb.DuckDBPyConnection, name: str) -> bool:
    row = con.execute(
        "SELECT count(*) FROM information_schema.tables WHERE table_name = ?", [name]
    ).fetchone()
    return bool(row and row[0])


def _columns(con: duckdb.DuckDBPyConnection, table: str) -> set[str]:
    rows = con.execute(
        "SELECT column_name FROM information_schema.columns WHERE table_name = ?", [table]
    ).fetchall()
    return {r[0] for r in rows}


HISTORY_COLUMNS: tuple[str, ...] = (
    "run_id", "created_at", "source", "underlying", "status", "reason", "dte_min", "dte_max",
    "lookback_days", "multiplier_tested", "recommended_multiplier", "smoothed_multiplier",
    "vega_weighted_mae_pct", "mae_pct", "bias_pct", "n_samples", "applied", "applied_at",
    "data_quality_status", "policy_decision", "policy_reason", "replay", "at_bound", "rv_7d_pct", "atm_iv_pct",
)


def list_runs(db_path: Path, *, underlying: str | None = None, source: str | None = None,
              limit: int = 20) -> pl.DataFrame:
    """Newest runs first; columns missing in an old file come back as nulls."""
    with connect(db_path, read_only=True) as con:
        if not _has_table(con, "calibration_runs"):
            return pl.DataFrame()
        have = _columns(con, "calibration_runs")
        cols = ", ".join(c if c in have else f"NULL AS {c}" for c in HISTORY_COLUMNS)
        where: list[str] = []
        params: list[Any] = []
        if underlying:
            where.append("underlying = ?")
            params.append(underlying)
        if source:
            where.append("source = ?")
            params.append(source)
        clause = f"WHERE {' AND '.join(where)}" if where else ""
        params.append(int(limit))
        return _frame(con, f"SELECT {cols} FROM calibration_runs {clause} ORDER BY created_at DESC LIMIT ?", params)


@dataclass(frozen=True, slots=True, kw_only=True)
class AppliedState:
    """Current applied multipliers of one underlying (from `applied_multipliers` only)."""

    underlying: str
    global_multiplier: float | None
    bands: dict[str, float] = field(default_factory=dict)
    updated_at: datetime | None = None
    run_id: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "underlying": self.underlying,
            "global_multiplier": self.global_multiplier,
            "bands": dict(self.bands),
            "updated_at": self.updated_at.isoformat() if self.updated_at else None,
            "run_id": self.run_id,
        }


def applied_state(db_path: Path, underlying: str) -> AppliedState:
    """Read the view `current_applied_multipliers` for one underlying.

    A file from before schema 2 has no view yet (readers never migrate): read its
    `applied_multipliers` table, the same store the view shows.
    """
    if not Path(db_path).exists():
        return AppliedState(underlying=underlying, global_multiplier=None)
    with connect(db_path, read_only=True) as con:
        if _has_table(con, "current_applied_multipliers"):
            source = "current_applied_multipliers"
        elif _has_table(con, "applied_multipliers"):
            source = "applied_multipliers"
        else:
            return AppliedState(underlying=underlying, global_multiplier=None)
        rows = con.execute(
            f"SELECT scope, multiplier, updated_at, run_id FROM {source} WHERE underlying = ?",
            [underlying],
        ).fetchall()
    g = next((r for r in rows if r[0] == "global"), None)
    newest = max(rows, key=lambda r: r[2]) if rows else None
    id_row = g if g is not None else newest
    return AppliedState(
        underlying=underlying,
        global_multiplier=float(g[1]) if g else None,
        bands={r[0]: float(r[1]) for r in rows if r[0] != "global"},
        updated_at=newest[2] if newest else None,
        run_id=id_row[3] if id_row is not None else None,
    )


def run_result(db_path: Path, run_id: str) -> dict[str, Any] | None:
    """The stored result JSON of one run."""
    with connect(db_path, read_only=True) as con:
        row = con.execute("SELECT result FROM calibration_runs WHERE run_id = ?", [run_id]).fetchone()
    return json.loads(row[0]) if row and row[0] else None


# The `calib sql` sandbox, fixed when the connection opens. The file is opened read-only, no file,
# network or extension access exists beyond it (COPY TO, EXPORT, read_text, glob, ATTACH of another
# file, LOAD/INSTALL all fail), and no statement can change these settings afterwards.
SQL_SANDBOX_SETTINGS: dict[str, str | bool | int | float | list[str]] = {
    "enable_external_access": False,
    "autoload_known_extensions": False,
    "autoinstall_known_extensions": False,
    "lock_configuration": True,
}


def _one_select(sql: str) -> duckdb.Statement:
    """The one statement in `sql`, if DuckDB's own parser says it is a SELECT.

    Comments, casing and whitespace cannot fool this the way a keyword prefix
    check could: DESCRIBE, SHOW, SUMMARIZE, WITH, FROM-first and VALUES parse as
    SELECT; COPY, EXPORT, ATTACH, LOAD, SET, PRAGMA, CALL, EXPLAIN... do not.
    """
    try:
        statements = duckdb.extract_statements(sql)
    except duckdb.Error as e:
        raise InvalidInputError(f"cannot parse the SQL: {e}") from e
    if not statements:
        raise InvalidInputError("empty SQL statement")
    if len(statements) > 1:
        raise InvalidInputError(f"`calib sql` runs exactly one statement; got {len(statements)}")
    (statement,) = statements
    if statement.type != duckdb.StatementType.SELECT:
        raise InvalidInputError(
            "`calib sql` is read-only: one SELECT statement (also WITH, FROM, DESCRIBE, SHOW, SUMMARIZE; "
            f"for PRAGMA x use SELECT * FROM pragma_x()); got {statement.type.name}"
        )
    return statement


# Dates and times polars can show and turn into Python objects (chrono's range, with margin);
# DuckDB's 'infinity' timestamps and dates lie far outside and make polars panic when printed.
_SHOWABLE_ABS_S = 8.0e12
_PER_SECOND = {"ns": 1e9, "us": 1e6, "ms": 1e3}


def _showable(col: pl.Series) -> bool:
    """False when `col` (or a list/struct inside it) holds a date or time polars cannot show."""
    dtype = col.dtype
    if isinstance(dtype, pl.List):
        return _showable(col.explode())
    if isinstance(dtype, pl.Array):
        return _showable(col.arr.explode())
    if isinstance(dtype, pl.Struct):
        return all(_showable(col.struct.field(f.name)) for f in dtype.fields)
    if isinstance(dtype, pl.Datetime):
        per_s = _PER_SECOND[dtype.time_unit or "us"]
    elif isinstance(dtype, pl.Date):
        per_s = 1 / 86400
    else:
        return True
    phys = col.to_physical()
    lo, hi = phys.min(), phys.max()
    return lo is None or max(abs(float(lo)), abs(float(hi))) / per_s <= _SHOWABLE_ABS_S  # type: ignore[arg-type]


def _check_showable(df: pl.DataFrame) -> pl.DataFrame:
    """Refuse, with a fix, results the table/JSON printer cannot show (instead of a polars panic)."""
    for name in df.columns:
        if not _showable(df[name]):
            raise InvalidInputError(f"column {name!r} holds a date outside the years polars can show "
                                    f"(such as 'infinity'): select it as {name}::VARCHAR")
    return df


def run_sql(db_path: Path, sql: str) -> pl.DataFrame:
    """Run one SELECT on a read-only, sandboxed connection (`SQL_SANDBOX_SETTINGS`) and return its rows."""
    statement = _one_select(sql)
    try:
        with connect(db_path, read_only=True, settings=SQL_SANDBOX_SETTINGS) as con:
            return _check_showable(con.sql(statement).pl())
    except pl.exceptions.PolarsError as e:  # a DuckDB type polars has no column for (UNION, ...)
        raise InvalidInputError(f"the result cannot be shown ({type(e).__name__}: {e}); "
                                "cast unusual columns to VARCHAR") from e
    except duckdb.PermissionException as e:
        raise InvalidInputError(f"not allowed in `calib sql` (no file or extension access): {e}") from e
    except (duckdb.ParserException, duckdb.CatalogException, duckdb.BinderException,
            duckdb.InvalidInputException, duckdb.ConversionException) as e:
        raise InvalidInputError(f"query failed: {e}") from e  # the user's SQL: a usage error
    except duckdb.Error as e:
        raise StoreError(f"query failed: {e}") from e


# --------------------------------------------------------------------------- dashboard (app.py)
#
# One read-only connection per call, every timestamp as a UTC polars datetime
# (polars converts through Arrow; fetching TIMESTAMPTZ as Python objects would
# need pytz). Columns an old file lacks come back as nulls, like `list_runs`.

APP_RUN_COLUMNS: tuple[str, ...] = (
    *HISTORY_COLUMNS, "mae_vol_points", "n_snapshots", "coverage_pct", "window_start", "window_end",
)


@dataclass(frozen=True, slots=True, kw_only=True)
class HistoryFileInfo:
    """What the history file holds, so the app can say which command to run."""

    path: str
    exists: bool
    initialized: bool  # has the `calibration_runs` table
    schema_version: int | None
    runs: dict[str, dict[str, int]] = field(default_factory=dict)  # underlying -> source -> count

    @property
    def n_runs(self) -> int:
        return sum(n for by_source in self.runs.values() for n in by_source.values())

    def count(self, underlying: str, source: str | None = None) -> int:
        by_source = self.runs.get(underlying, {})
        return by_source.get(source, 0) if source else sum(by_source.values())


@dataclass(frozen=True, slots=True, kw_only=True)
class RunDetail:
    """One run: its flat columns (`APP_RUN_COLUMNS`) and its stored result JSON ({} if none)."""

    run: dict[str, Any]
    result: dict[str, Any]


@dataclass(frozen=True, slots=True, kw_only=True)
class DashboardData:
    """Everything the dashboard shows for one underlying, read in one connection."""

    underlying: str
    info: HistoryFileInfo
    latest_live: RunDetail | None
    live_runs: pl.DataFrame  # newest first
    auto_history: pl.DataFrame  # harvested runs, newest window first
    applied: pl.DataFrame  # scope, multiplier, updated_at, run_id (global first)
    loaded_at: datetime
    applied_log: pl.DataFrame = field(default_factory=pl.DataFrame)  # changes over time, oldest first


def _tables(con: duckdb.DuckDBPyConnection) -> set[str]:
    # fetchall (not fetchone): duckdb 2.0 refuses `con.sql` while an execute() result is unfinished
    return {r[0] for r in con.execute("SELECT table_name FROM information_schema.tables").fetchall()}


def _utc(df: pl.DataFrame) -> pl.DataFrame:
    """Every datetime column in UTC (naive values are taken as UTC)."""
    exprs = []
    for name, dtype in df.schema.items():
        if isinstance(dtype, pl.Datetime):
            col = pl.col(name)
            exprs.append(col.dt.convert_time_zone("UTC") if dtype.time_zone else col.dt.replace_time_zone("UTC"))
    return df.with_columns(exprs) if exprs else df


def _info(con: duckdb.DuckDBPyConnection, db_path: Path) -> HistoryFileInfo:
    tables = _tables(con)
    if "calibration_runs" not in tables:
        return HistoryFileInfo(path=str(db_path), exists=True, initialized=False, schema_version=None)
    version = None
    if "schema_migrations" in tables:
        row = con.execute("SELECT max(version) FROM schema_migrations").fetchone()
        version = int(row[0]) if row and row[0] is not None else None
    runs: dict[str, dict[str, int]] = {}
    for und, source, n in con.execute(
        "SELECT underlying, source, count(*) FROM calibration_runs GROUP BY ALL ORDER BY ALL"
    ).fetchall():
        runs.setdefault(str(und), {})[str(source)] = int(n)
    return HistoryFileInfo(path=str(db_path), exists=True, initialized=True, schema_version=version, runs=runs)


def _runs(con: duckdb.DuckDBPyConnection, *, underlying: str, source: str | None = None,
          run_id: str | None = None, limit: int = 50, by_window: bool = False,
          with_result: bool = False) -> pl.DataFrame:
    have = _columns(con, "calibration_runs")
    names = (*APP_RUN_COLUMNS, "result") if with_result else APP_RUN_COLUMNS
    cols = ", ".join(c if c in have else f"NULL AS {c}" for c in names)
    if "result" in have:  # the recommended multiplier's bootstrap interval (NULL for runs older than it)
        cols += ", " + ", ".join(f"TRY_CAST(json_extract(result, '$.global_metrics.{c}') AS DOUBLE) AS {c}"
                                 for c in ("ci_low", "ci_high"))
    where, params = ["underlying = ?"], [underlying]
    if source:
        where.append("source = ?")
        params.append(source)
    if run_id:
        where.append("run_id = ?")
        params.append(run_id)
    order = "coalesce(window_end, created_at)" if by_window and "window_end" in have else "created_at"
    sql = (f"SELECT {cols} FROM calibration_runs WHERE {' AND '.join(where)} "
           f"ORDER BY {order} DESC, created_at DESC LIMIT ?")
    return _utc(_frame(con, sql, [*params, int(limit)]))


def _detail(frame: pl.DataFrame) -> RunDetail | None:
    if frame.height == 0:
        return None
    row = frame.row(0, named=True)
    text = row.pop("result", None)
    try:
        result = json.loads(text) if text else {}
    except (TypeError, ValueError):
        result = {}
    return RunDetail(run=row, result=result if isinstance(result, dict) else {})


def _applied(con: duckdb.DuckDBPyConnection, underlying: str) -> pl.DataFrame:
    tables = _tables(con)
    view = "current_applied_multipliers" if "current_applied_multipliers" in tables else None
    if view is None and "applied_multipliers" in tables:
        view = "applied_multipliers"
    if view is None:
        return pl.DataFrame(schema={"scope": pl.String, "multiplier": pl.Float64,
                                    "updated_at": pl.Datetime("us", "UTC"), "run_id": pl.String})
    return _utc(_frame(
        con,
        f"SELECT scope, multiplier, updated_at, run_id FROM {view} WHERE underlying = ? "
        "ORDER BY CASE WHEN scope = 'global' THEN 0 ELSE 1 END, scope",
        [underlying],
    ))


def history_file_info(db_path: Path) -> HistoryFileInfo:
    """Whether the file exists and is initialized, and its run counts per underlying and source."""
    if not Path(db_path).exists():
        return HistoryFileInfo(path=str(db_path), exists=False, initialized=False, schema_version=None)
    with connect(db_path, read_only=True) as con:
        return _info(con, Path(db_path))


def applied_multipliers(db_path: Path, underlying: str) -> pl.DataFrame:
    """Current applied multipliers per scope (global first) with their own `updated_at` and `run_id`.

    Reads only the view `current_applied_multipliers` (the one source of truth);
    an empty frame when nothing was ever applied or the file does not exist.
    """
    if not Path(db_path).exists():
        return pl.DataFrame(schema={"scope": pl.String, "multiplier": pl.Float64,
                                    "updated_at": pl.Datetime("us", "UTC"), "run_id": pl.String})
    with connect(db_path, read_only=True) as con:
        return _applied(con, underlying)


def run_detail(db_path: Path, underlying: str, run_id: str) -> RunDetail | None:
    """One run of `underlying` with its parsed result JSON (None when it does not exist)."""
    with connect(db_path, read_only=True) as con:
        if "calibration_runs" not in _tables(con):
            return None
        return _detail(_runs(con, underlying=underlying, run_id=run_id, limit=1, with_result=True))


def latest_live_run_id(db_path: Path, underlying: str) -> str | None:
    """The newest live run of `underlying`: the run Force-Apply Latest would apply."""
    if not Path(db_path).exists():
        return None
    with connect(db_path, read_only=True) as con:
        if "calibration_runs" not in _tables(con):
            return None
        row = con.execute(
            "SELECT run_id FROM calibration_runs WHERE underlying = ? AND source = 'live' "
            "ORDER BY created_at DESC LIMIT 1",
            [underlying],
        ).fetchone()
    return str(row[0]) if row else None


def dashboard_data(db_path: Path, underlying: str, *, history_limit: int = 50,
                   live_limit: int = 20) -> DashboardData:
    """All sections of the app for one underlying, read in one short read-only connection.

    A missing or empty file is not an error: `info` says so and the frames are empty.
    """
    now = datetime.now(UTC)
    empty = pl.DataFrame()
    if not Path(db_path).exists():
        return DashboardData(underlying=underlying, info=history_file_info(db_path), latest_live=None,
                             live_runs=empty, auto_history=empty, applied=applied_multipliers(db_path, underlying),
                             loaded_at=now)
    with connect(db_path, read_only=True) as con:
        info = _info(con, Path(db_path))
        applied = _applied(con, underlying)
        if not info.initialized:
            return DashboardData(underlying=underlying, info=info, latest_live=None, live_runs=empty,
                                 auto_history=empty, applied=applied, loaded_at=now)
        live = _runs(con, underlying=underlying, source="live", limit=live_limit)
        history = _runs(con, underlying=underlying, source="harvested", limit=history_limit, by_window=True)
        latest = _detail(_runs(con, underlying=underlying, source="live", limit=1, with_result=True))
        log = _applied_log(con, underlying)
    return DashboardData(underlying=underlying, info=info, latest_live=latest, live_runs=live,
                         auto_history=history, applied=applied, loaded_at=now, applied_log=log)


APPLIED_LOG_LIMIT = 500


def _applied_log(con: duckdb.DuckDBPyConnection, underlying: str) -> pl.DataFrame:
    """The newest `APPLIED_LOG_LIMIT` changes of `applied_multipliers_log`, oldest first (empty without the table)."""
    if "applied_multipliers_log" not in _tables(con):
        return pl.DataFrame(schema={"changed_at": pl.Datetime("us", "UTC"), "scope": pl.String,
                                    "old_multiplier": pl.Float64, "new_multiplier": pl.Float64,
                                    "run_id": pl.String, "reason": pl.String})
    return _utc(_frame(
        con,
        "SELECT * FROM (SELECT changed_at, scope, old_multiplier, new_multiplier, run_id, reason "
        "FROM applied_multipliers_log WHERE underlying = ? ORDER BY changed_at DESC, change_id DESC LIMIT ?) "
        "ORDER BY changed_at, scope",
        [underlying, APPLIED_LOG_LIMIT],
    ))

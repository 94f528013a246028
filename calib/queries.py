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
from calib.store.applied import read_applied
from calib.store.catalog import has_table, table_names
from calib.store.history import NEWEST_FIRST
from calib.store.read import open_read_only


def _frame(con: duckdb.DuckDBPyConnection, sql: str, params: list[Any] | None = None) -> pl.DataFrame:
    return con.sql(sql, params=params or []).pl()


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
    with open_read_only(db_path) as con:
        if not has_table(con, "calibration_runs"):
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
        order = NEWEST_FIRST if "seq" in have else "created_at DESC"
        return _frame(con, f"SELECT {cols} FROM calibration_runs {clause} ORDER BY {order} LIMIT ?", params)


@dataclass(frozen=True, slots=True, kw_only=True)
class SkewInForce:
    """The skew curve the applied multiplier was fitted with: the applied run's `skew.current`."""

    anchors_z: tuple[float, ...]
    ratios: tuple[float, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"anchors_z": list(self.anchors_z), "ratios": list(self.ratios)}


@dataclass(frozen=True, slots=True, kw_only=True)
class AppliedMultipliers:
    """Current applied multipliers of one underlying (from `applied_multipliers` only).

    `calib state --json`, `GET /api/calibration/state` and `calib.client.applied_multipliers`
    all return this object (or its `to_dict()`), built by `applied_state` alone.
    """

    underlying: str
    global_multiplier: float | None
    bands: dict[str, float] = field(default_factory=dict)
    updated_at: datetime | None = None
    run_id: str | None = None
    skew: SkewInForce | None = None  # None until a run is applied (or its result holds no skew)

    def to_dict(self) -> dict[str, Any]:
        return {
            "underlying": self.underlying,
            "global_multiplier": self.global_multiplier,
            "bands": dict(self.bands),
            "updated_at": self.updated_at.isoformat() if self.updated_at else None,
            "run_id": self.run_id,
            "skew": self.skew.to_dict() if self.skew else None,
        }

    def summary(self) -> str:
        """The text `calib state` prints: the global multiplier, the bands, the skew in force."""
        if self.global_multiplier is None:
            return (f"No multipliers applied for {self.underlying} yet (the engine uses 1.0000). "
                    "Run `calib calibrate-live` to let the policy apply one.")
        lines = [f"Applied multipliers for {self.underlying} (updated {self.updated_at:%Y-%m-%d %H:%M:%S}Z, "
                 f"run {self.run_id})", f"  global     {self.global_multiplier:.4f}"]
        lines += [f"  {k:10} {v:.4f}" for k, v in self.bands.items()]
        if self.skew is not None:
            lines.append("  skew       " + "  ".join(
                f"z={z:+g}: {r:.3f}" for z, r in zip(self.skew.anchors_z, self.skew.ratios, strict=True)))
        return "\n".join(lines)


AppliedState = AppliedMultipliers  # the name callers used before the read API


def _skew_of_run(con: duckdb.DuckDBPyConnection, run_id: str | None) -> SkewInForce | None:
    """`skew.anchors` / `skew.current` of the stored result of `run_id` (None if absent)."""
    if run_id is None or not has_table(con, "calibration_runs"):
        return None
    row = con.execute(
        "SELECT json_extract(result, '$.skew.anchors')::VARCHAR, json_extract(result, '$.skew.current')::VARCHAR "
        "FROM calibration_runs WHERE run_id = ?", [run_id],
    ).fetchone()
    if not row or row[0] is None or row[1] is None:
        return None
    anchors, ratios = json.loads(row[0]), json.loads(row[1])
    if not isinstance(anchors, list) or not isinstance(ratios, list) or len(anchors) != len(ratios):
        return None
    return SkewInForce(anchors_z=tuple(float(a) for a in anchors), ratios=tuple(float(r) for r in ratios))


def applied_state(db_path: Path, underlying: str) -> AppliedMultipliers:
    """Read the view `current_applied_multipliers` for one underlying, and the skew applied with it.

    A file from before schema 2 has no view yet (readers never migrate): read its
    `applied_multipliers` table, the same store the view shows. The skew is the
    `current` curve stored in the result of the run that set the global multiplier.
    """
    if not Path(db_path).exists():
        return AppliedMultipliers(underlying=underlying, global_multiplier=None)
    with open_read_only(db_path) as con:
        applied = read_applied(con, underlying)
        if not applied and not has_table(con, "applied_multipliers"):
            return AppliedMultipliers(underlying=underlying, global_multiplier=None)
        rows = [(scope, *applied[scope]) for scope in _scope_order(applied)]
        g = next((r for r in rows if r[0] == "global"), None)
        skew = _skew_of_run(con, g[3] if g else None)
    newest = max(rows, key=lambda r: r[2]) if rows else None
    id_row = g if g is not None else newest
    return AppliedMultipliers(
        underlying=underlying,
        global_multiplier=float(g[1]) if g else None,
        bands={r[0]: float(r[1]) for r in rows if r[0] != "global"},
        updated_at=newest[2] if newest else None,
        run_id=id_row[3] if id_row is not None else None,
        skew=skew,
    )


def history_records(db_path: Path, *, underlying: str | None = None, source: str | None = None,
                    limit: int = 20) -> list[dict[str, Any]]:
    """`list_runs` as JSON-ready dicts: what `calib history --json` prints and the HTTP API serves."""
    df = list_runs(db_path, underlying=underlying, source=source, limit=limit)
    return json_records(df)


def json_records(df: pl.DataFrame) -> list[dict[str, Any]]:
    """Rows as plain JSON values: NaN -> null, dates and times as the CLI's JSON prints them."""
    out: list[dict[str, Any]] = json_ready(df.to_dicts())
    return out


def json_ready(obj: Any) -> Any:
    """`obj` as `json.loads` would give it back from the CLI's `--json` output."""
    from calib.engine.result import clean_json

    return json.loads(json.dumps(clean_json(obj), default=str, allow_nan=False))


def run_by_id(db_path: Path, run_id: str) -> RunDetail | None:
    """One run by id, any underlying: its history columns and its stored result JSON."""
    with open_read_only(db_path) as con:
        if not has_table(con, "calibration_runs"):
            return None
        row = con.execute("SELECT underlying FROM calibration_runs WHERE run_id = ?", [run_id]).fetchone()
        if row is None:
            return None
        return _detail(_runs(con, underlying=str(row[0]), run_id=run_id, limit=1, with_result=True))


def run_result(db_path: Path, run_id: str) -> dict[str, Any] | None:
    """The stored result JSON of one run."""
    with open_read_only(db_path) as con:
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
        with open_read_only(db_path, settings=SQL_SANDBOX_SETTINGS) as con:
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


def _utc(df: pl.DataFrame) -> pl.DataFrame:
    """Every datetime column in UTC (naive values are taken as UTC)."""
    exprs = []
    for name, dtype in df.schema.items():
        if isinstance(dtype, pl.Datetime):
            col = pl.col(name)
            exprs.append(col.dt.convert_time_zone("UTC") if dtype.time_zone else col.dt.replace_time_zone("UTC"))
    return df.with_columns(exprs) if exprs else df


def _info(con: duckdb.DuckDBPyConnection, db_path: Path) -> HistoryFileInfo:
    tables = table_names(con)
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
    if by_window and "window_end" in have:
        order = "coalesce(window_end, created_at) DESC, created_at DESC"
    else:
        order = NEWEST_FIRST if "seq" in have else "created_at DESC"
    sql = f"SELECT {cols} FROM calibration_runs WHERE {' AND '.join(where)} ORDER BY {order} LIMIT ?"
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


def _scope_order(applied: dict[str, Any]) -> list[str]:
    """Global first, then the bands by name: the order of the view `current_applied_multipliers`."""
    return sorted(applied, key=lambda scope: (scope != "global", scope))


def _applied(con: duckdb.DuckDBPyConnection, underlying: str) -> pl.DataFrame:
    """`read_applied` as a frame, global first, then the bands by name."""
    applied = read_applied(con, underlying)
    order = _scope_order(applied)
    return _utc(pl.DataFrame(
        {"scope": order, "multiplier": [applied[s][0] for s in order],
         "updated_at": [applied[s][1] for s in order], "run_id": [applied[s][2] for s in order]},
        schema={"scope": pl.String, "multiplier": pl.Float64, "updated_at": pl.Datetime("us", "UTC"),
                "run_id": pl.String},
    ))


def history_file_info(db_path: Path) -> HistoryFileInfo:
    """Whether the file exists and is initialized, and its run counts per underlying and source."""
    if not Path(db_path).exists():
        return HistoryFileInfo(path=str(db_path), exists=False, initialized=False, schema_version=None)
    with open_read_only(db_path) as con:
        return _info(con, Path(db_path))


def applied_multipliers(db_path: Path, underlying: str) -> pl.DataFrame:
    """Current applied multipliers per scope (global first) with their own `updated_at` and `run_id`.

    Reads only the view `current_applied_multipliers` (the one source of truth);
    an empty frame when nothing was ever applied or the file does not exist.
    """
    if not Path(db_path).exists():
        return pl.DataFrame(schema={"scope": pl.String, "multiplier": pl.Float64,
                                    "updated_at": pl.Datetime("us", "UTC"), "run_id": pl.String})
    with open_read_only(db_path) as con:
        return _applied(con, underlying)


def run_detail(db_path: Path, underlying: str, run_id: str) -> RunDetail | None:
    """One run of `underlying` with its parsed result JSON (None when it does not exist)."""
    with open_read_only(db_path) as con:
        if "calibration_runs" not in table_names(con):
            return None
        return _detail(_runs(con, underlying=underlying, run_id=run_id, limit=1, with_result=True))


def latest_live_run_id(db_path: Path, underlying: str) -> str | None:
    """The newest live run of `underlying`: the run Force-Apply Latest would apply."""
    if not Path(db_path).exists():
        return None
    with open_read_only(db_path) as con:
        if "calibration_runs" not in table_names(con):
            return None
        order = NEWEST_FIRST if "seq" in _columns(con, "calibration_runs") else "created_at DESC"
        row = con.execute(
            f"SELECT run_id FROM calibration_runs WHERE underlying = ? AND source = 'live' ORDER BY {order} LIMIT 1",
            [underlying],
        ).fetchone()
    return str(row[0]) if row else None


def change_marker(db_path: Path) -> tuple[Any, ...]:
    """A cheap value that changes with every write to the history file (the app's cache key).

    One read: the schema version, the newest run `seq` and run count (a new run),
    the newest `applied_multipliers_log.change_id` (an apply: Force-Apply updates a
    run and logs, it inserts none) and the backtest count. A missing file is ().
    """
    if not Path(db_path).exists():
        return ()
    with open_read_only(db_path) as con:
        tables = table_names(con)
        parts = []
        if "schema_migrations" in tables:
            parts.append("(SELECT max(version) FROM schema_migrations)")
        if "calibration_runs" in tables:
            newest = "max(seq)" if "seq" in _columns(con, "calibration_runs") else "max(created_at)::VARCHAR"
            parts += [f"(SELECT {newest} FROM calibration_runs)", "(SELECT count(*) FROM calibration_runs)"]
        if "applied_multipliers_log" in tables:
            parts.append("(SELECT max(change_id) FROM applied_multipliers_log)")
        elif "applied_multipliers" in tables:
            parts.append("(SELECT max(updated_at)::VARCHAR FROM applied_multipliers)")
        if "backtests" in tables:
            parts.append("(SELECT count(*) FROM backtests)")
        if not parts:
            return (len(tables),)
        row = con.execute("SELECT " + ", ".join(parts)).fetchone()
    return tuple(row) if row else ()


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
    with open_read_only(db_path) as con:
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
    if "applied_multipliers_log" not in table_names(con):
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

"""Named schema migrations, recorded in `schema_migrations`; applied in place on open.

Old rows are kept as they are: new columns are NULL for them.
"""

from __future__ import annotations

from datetime import UTC, datetime

import duckdb

from calib.errors import StoreError
from calib.store.catalog import has_table
from calib.store.rollback import rollback_quietly

MIGRATIONS: tuple[tuple[int, str, tuple[str, ...]], ...] = (
    (
        1,
        "initial_runs_and_applied_state",
        (
            """CREATE TABLE IF NOT EXISTS calibration_runs (
                run_id VARCHAR PRIMARY KEY,
                created_at TIMESTAMPTZ NOT NULL,
                source VARCHAR NOT NULL,
                underlying VARCHAR NOT NULL,
                dte_min DOUBLE,
                dte_max DOUBLE,
                lookback_days DOUBLE,
                n_samples BIGINT,
                multiplier_tested DOUBLE,
                recommended_multiplier DOUBLE,
                smoothed_multiplier DOUBLE,
                mae_pct DOUBLE,
                mae_vol_points DOUBLE,
                vega_weighted_mae_pct DOUBLE,
                bias_pct DOUBLE,
                status VARCHAR NOT NULL,
                reason VARCHAR,
                applied BOOLEAN NOT NULL DEFAULT false,
                applied_at TIMESTAMPTZ,
                data_quality_status VARCHAR,
                result JSON
            )""",
            """CREATE TABLE IF NOT EXISTS applied_multipliers (
                underlying VARCHAR NOT NULL,
                scope VARCHAR NOT NULL,
                multiplier DOUBLE NOT NULL,
                updated_at TIMESTAMPTZ NOT NULL,
                run_id VARCHAR,
                PRIMARY KEY (underlying, scope)
            )""",
        ),
    ),
    (
        2,
        "run_detail_policy_log_and_views",
        (
            "ALTER TABLE calibration_runs ADD COLUMN IF NOT EXISTS n_snapshots BIGINT",
            "ALTER TABLE calibration_runs ADD COLUMN IF NOT EXISTS at_bound BOOLEAN",
            "ALTER TABLE calibration_runs ADD COLUMN IF NOT EXISTS rv_7d_pct DOUBLE",
            "ALTER TABLE calibration_runs ADD COLUMN IF NOT EXISTS atm_iv_pct DOUBLE",
            "ALTER TABLE calibration_runs ADD COLUMN IF NOT EXISTS coverage_pct DOUBLE",
            "ALTER TABLE calibration_runs ADD COLUMN IF NOT EXISTS rows_scanned BIGINT",
            "ALTER TABLE calibration_runs ADD COLUMN IF NOT EXISTS window_start TIMESTAMPTZ",
            "ALTER TABLE calibration_runs ADD COLUMN IF NOT EXISTS window_end TIMESTAMPTZ",
            "ALTER TABLE calibration_runs ADD COLUMN IF NOT EXISTS replay BOOLEAN",
            "ALTER TABLE calibration_runs ADD COLUMN IF NOT EXISTS policy_decision VARCHAR",
            "ALTER TABLE calibration_runs ADD COLUMN IF NOT EXISTS policy_reason VARCHAR",
            "ALTER TABLE calibration_runs ADD COLUMN IF NOT EXISTS smoothed_band_multipliers JSON",
            """CREATE TABLE IF NOT EXISTS applied_multipliers_log (
                change_id BIGINT PRIMARY KEY,
                changed_at TIMESTAMPTZ NOT NULL,
                underlying VARCHAR NOT NULL,
                scope VARCHAR NOT NULL,
                old_multiplier DOUBLE,
                new_multiplier DOUBLE NOT NULL,
                run_id VARCHAR,
                reason VARCHAR
            )""",
            """CREATE OR REPLACE VIEW auto_calibration_history AS
                SELECT * FROM calibration_runs WHERE source = 'harvested' ORDER BY created_at DESC""",
            """CREATE OR REPLACE VIEW live_calibration_history AS
                SELECT * FROM calibration_runs WHERE source = 'live' ORDER BY created_at DESC""",
            """CREATE OR REPLACE VIEW current_applied_multipliers AS
                SELECT underlying, scope, multiplier, updated_at, run_id
                FROM applied_multipliers
                ORDER BY underlying, CASE WHEN scope = 'global' THEN 0 ELSE 1 END, scope""",
        ),
    ),
    (
        3,
        "backtests",
        (
            # Walk-forward backtests (`calib backtest`): their own tables, never `applied_multipliers`.
            """CREATE TABLE IF NOT EXISTS backtests (
                backtest_id VARCHAR PRIMARY KEY,
                created_at TIMESTAMPTZ NOT NULL,
                underlying VARCHAR NOT NULL,
                start_at TIMESTAMPTZ NOT NULL,
                end_at TIMESTAMPTZ NOT NULL,
                step_seconds DOUBLE NOT NULL,
                horizon_seconds DOUBLE NOT NULL,
                lookback_days DOUBLE,
                dte_min DOUBLE,
                dte_max DOUBLE,
                start_multiplier DOUBLE NOT NULL,
                data_root VARCHAR,
                engine VARCHAR,
                workers INTEGER,
                elapsed_s DOUBLE,
                n_steps INTEGER NOT NULL,
                n_failed INTEGER NOT NULL,
                n_applied INTEGER NOT NULL,
                n_scored INTEGER,
                mean_oos_vmae_pct_policy DOUBLE,
                mean_oos_vmae_pct_static DOUBLE,
                mean_oos_vmae_pct_best DOUBLE,
                improvement_pct DOUBLE,
                policy JSON,
                summary JSON
            )""",
            """CREATE TABLE IF NOT EXISTS backtest_steps (
                backtest_id VARCHAR NOT NULL,
                step_index INTEGER NOT NULL,
                as_of TIMESTAMPTZ NOT NULL,
                status VARCHAR NOT NULL,
                reason VARCHAR,
                recommended_iv_multiplier DOUBLE,
                recommended_iv_multiplier_current_skew DOUBLE,
                ci_low DOUBLE,
                ci_high DOUBLE,
                applied_multiplier DOUBLE,
                decision VARCHAR,
                decision_reason VARCHAR,
                smoothed_multiplier DOUBLE,
                oos_vmae_pct_policy DOUBLE,
                oos_vmae_pct_static DOUBLE,
                oos_vmae_pct_best DOUBLE,
                oos_mae_pct_policy DOUBLE,
                oos_mae_pct_static DOUBLE,
                oos_mae_pct_best DOUBLE,
                best_multiplier DOUBLE,
                n_samples BIGINT,
                n_oos_samples BIGINT,
                vega_weighted_mae_pct DOUBLE,
                PRIMARY KEY (backtest_id, step_index)
            )""",
        ),
    ),
    (
        4,
        "run_and_apply_sequence",
        (
            # Issue 13: "newest" is the order of commits, never wall time (clocks step, and a run's
            # created_at is taken before its writer holds the file). `seq` numbers runs in insert
            # order; `applied_seq` is the `applied_multipliers_log.change_id` of the global change
            # that applied the run, so the newest applied run and the log cannot disagree.
            "ALTER TABLE calibration_runs ADD COLUMN IF NOT EXISTS seq BIGINT",
            "ALTER TABLE calibration_runs ADD COLUMN IF NOT EXISTS applied_seq BIGINT",
            """UPDATE calibration_runs SET seq = b.k
               FROM (SELECT run_id, row_number() OVER (ORDER BY created_at, run_id) AS k FROM calibration_runs) b
               WHERE calibration_runs.run_id = b.run_id""",
            """UPDATE calibration_runs SET applied_seq = l.change_id
               FROM (SELECT underlying, run_id, max(change_id) AS change_id FROM applied_multipliers_log
                     WHERE scope = 'global' GROUP BY ALL) l
               WHERE calibration_runs.applied AND calibration_runs.run_id = l.run_id
                 AND calibration_runs.underlying = l.underlying""",
        ),
    ),
)
SCHEMA_VERSION = MIGRATIONS[-1][0]


def newer_schema_error(path: object, version: int) -> str:
    """The refusal to write a file whose schema a newer calib made (issue 13, defect 6)."""
    return (f"history file {path} has schema v{version}, newer than this calib knows (v{SCHEMA_VERSION}): "
            f"a calib that knows schema v{version} or later must write it (upgrade calib); "
            "reading it with this one is still allowed")


def current_version(con: duckdb.DuckDBPyConnection) -> int:
    if not has_table(con, "schema_migrations"):
        return 0
    row = con.execute("SELECT max(version) FROM schema_migrations").fetchone()
    return int(row[0]) if row and row[0] is not None else 0


def migrate(con: duckdb.DuckDBPyConnection, *, upto: int | None = None) -> list[int]:
    """Apply pending migrations (each in its own transaction); returns the versions applied."""
    target = SCHEMA_VERSION if upto is None else upto
    try:  # the common case, a file already at the target version: one cheap query, no DDL
        row = con.execute("SELECT max(version) FROM schema_migrations").fetchone()
        if row and row[0] is not None and int(row[0]) > SCHEMA_VERSION:
            # A newer calib's columns and rules are unknown here: writing could break them.
            raise StoreError(newer_schema_error(con.execute("PRAGMA database_list").fetchone()[2], int(row[0])))  # type: ignore[index]
        if row and row[0] is not None and int(row[0]) >= target:
            return []
    except duckdb.CatalogException:  # no schema_migrations table yet
        pass
    con.execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations "
        "(version INTEGER PRIMARY KEY, name VARCHAR NOT NULL, applied_at TIMESTAMPTZ NOT NULL)"
    )
    have = current_version(con)
    applied = []
    for version, name, statements in MIGRATIONS:
        if version <= have or (upto is not None and version > upto):
            continue
        con.execute("BEGIN TRANSACTION")
        try:
            for sql in statements:
                con.execute(sql)
            con.execute("INSERT INTO schema_migrations VALUES (?, ?, ?)", [version, name, datetime.now(UTC)])
            con.execute("COMMIT")
        except Exception:
            rollback_quietly(con)
            raise
        applied.append(version)
    return applied

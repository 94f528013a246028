"""What `calib bench --peers` sets calib against, each in a fresh process.

- The **floor**: a Python process that imports polars and reads the columns
  calib needs from the window's files, filtered to the window
  (`FLOOR_CODE`). No tool that reads the data can be faster than that.
- The **DuckDB peer** (`python -m calib.bench.peers duckdb SPEC`): the same job
  written the plain way, SQL for the data and scipy for the fit. DuckDB parses
  expiry, strike and type out of `instrument_name` with `regexp_extract` when
  the files lack them, takes the per-snapshot median index and a trailing 7-day
  RV with window functions, keeps the quotes with 3-10 days to expiry above the
  tick, and numpy + `scipy.special.ndtr` price them (Black-76, coin) while
  `scipy.optimize.minimize_scalar` finds the multiplier of RV_7d that minimizes
  the vega-weighted mean absolute price error; it scores the tested (1.0) and
  the fitted multiplier and records one row in a DuckDB file. It has no skew,
  bands or data-quality grading, so it does less than calib does.
"""

from __future__ import annotations

import json
import sys
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

# Run as `python -c FLOOR_CODE FILES_JSON START_ISO END_ISO COLUMNS_JSON`: polars only, nothing of calib.
FLOOR_CODE = """
import json, sys
from datetime import datetime
import polars as pl
files, lo, hi, cols = json.loads(sys.argv[1]), sys.argv[2], sys.argv[3], json.loads(sys.argv[4])
lo, hi = datetime.fromisoformat(lo), datetime.fromisoformat(hi)
df = pl.scan_parquet(files).select(cols).filter(pl.col("snapshot_ts").is_between(lo, hi)).collect()
print(df.height)
"""
# The quote columns calib's scan reads (index_price comes from the footers), by layout.
FLOOR_COLUMNS: dict[str, tuple[str, ...]] = {
    "columns": ("snapshot_ts", "expiry_ts", "strike", "option_type", "mark_price", "mark_iv", "underlying_price",
                "bid_price", "ask_price"),
    "minimal": ("snapshot_ts", "instrument_name", "mark_price", "mark_iv", "underlying_price", "bid_price",
                "ask_price"),
}
PEER_DTE = (3.0, 10.0)  # days to expiry of the fitted quotes (calib's global range)
MIN_TICK_COIN = 1e-4
_NAME = r"^([A-Z]+)-(\d{1,2}[A-Z]{3}\d{2})-([0-9]+(?:[d.][0-9]+)?)-([CP])$"


def window_files(data_dir: Path, underlying: str, start: datetime, end: datetime) -> list[str]:
    """Parquet files of the `date=` partitions from `start`'s day to `end`'s day."""
    out = []
    day = start.date()
    while day <= end.date():
        d = Path(data_dir) / underlying / f"date={day:%Y-%m-%d}"
        if d.is_dir():
            out += sorted(str(p) for p in d.glob("*.parquet") if not p.name.startswith("."))
        day += timedelta(days=1)
    return out


def duckdb_peer(data_dir: Path, underlying: str, start: datetime, end: datetime, db: Path) -> dict[str, Any]:
    """The DuckDB SQL + `minimize_scalar` pipeline on the window `[start, end]`; returns its figures."""
    import duckdb
    import numpy as np
    from scipy.optimize import minimize_scalar
    from scipy.special import ndtr

    t0 = time.perf_counter()
    files = window_files(data_dir, underlying, start, end)
    warm = window_files(data_dir, underlying, start - timedelta(days=7), end)
    con = duckdb.connect()
    cols = {r[0] for r in con.execute("SELECT name FROM parquet_schema(?)", [files[0]]).fetchall()}
    if {"expiry_ts", "strike", "option_type"} <= cols:
        parsed = "expiry_ts, strike, option_type"
    else:
        parsed = (f"(strptime(regexp_extract(instrument_name, '{_NAME}', 2), '%d%b%y') + INTERVAL 8 HOUR)::TIMESTAMPTZ "
                  "AS expiry_ts, "
                  f"CAST(replace(regexp_extract(instrument_name, '{_NAME}', 3), 'd', '.') AS DOUBLE) AS strike, "
                  f"regexp_extract(instrument_name, '{_NAME}', 4) AS option_type")
    lo, hi, wlo = start, end, start - timedelta(days=7)
    con.execute("SET TimeZone = 'UTC'")
    con.execute("""
        CREATE TEMP TABLE rv AS
        WITH spot AS (
            SELECT snapshot_ts AS ts, median(index_price) AS s FROM read_parquet(?)
            WHERE snapshot_ts BETWEEN ? AND ? AND index_price > 0 GROUP BY 1),
        ret AS (
            SELECT ts, ln(s / lag(s) OVER (ORDER BY ts)) AS r,
                   epoch(ts - lag(ts) OVER (ORDER BY ts)) / (365.0 * 86400) AS dt FROM spot)
        SELECT ts, sqrt(sum(r * r) OVER w / sum(dt) OVER w) AS rv, count(r) OVER w AS n FROM ret
        WINDOW w AS (ORDER BY ts RANGE BETWEEN INTERVAL 7 DAY PRECEDING AND CURRENT ROW)""", [warm, wlo, hi])
    t_rv = time.perf_counter()
    sql = f"""
        WITH q AS (
            SELECT snapshot_ts AS ts, {parsed}, mark_price, underlying_price FROM read_parquet(?)
            WHERE snapshot_ts BETWEEN ? AND ?)
        SELECT strike / underlying_price AS k, (epoch_us(expiry_ts) - epoch_us(q.ts)) / (365.0 * 86400e6) AS t,
               option_type = 'C' AS is_call, mark_price AS mark, rv.rv AS rv
        FROM q JOIN rv USING (ts)
        WHERE rv.n >= 12 AND rv.rv > 0 AND mark_price > ? AND underlying_price > 0 AND strike > 0
          AND (epoch_us(expiry_ts) - epoch_us(q.ts)) / 86400e6 BETWEEN ? AND ?"""
    a = con.execute(sql, [files, lo, hi, MIN_TICK_COIN, *PEER_DTE]).fetchnumpy()
    t_read = time.perf_counter() - t0
    k, t, call, mark, rv = (np.asarray(a[c]) for c in ("k", "t", "is_call", "mark", "rv"))
    w = np.where(call, 1.0, -1.0)
    sqrt_t = np.sqrt(t)

    def price_and_vega(m: float) -> tuple[np.ndarray, np.ndarray]:
        s = m * rv * sqrt_t
        d1 = (-np.log(k) + 0.5 * s * s) / s
        price = w * (ndtr(w * d1) - k * ndtr(w * (d1 - s)))
        return price, sqrt_t * np.exp(-0.5 * d1 * d1) / np.sqrt(2 * np.pi)

    def objective(m: float) -> float:
        price, vega = price_and_vega(m)
        return float(np.sum(vega * np.abs(price - mark) / mark) / np.sum(vega))

    fit = minimize_scalar(objective, bounds=(0.25, 4.0), method="bounded", options={"xatol": 1e-6})
    scores = {}
    for name, m in (("tested", 1.0), ("recommended", float(fit.x))):
        price, vega = price_and_vega(m)
        err = np.abs(price - mark) / mark * 100.0
        scores[name] = {"multiplier": m, "mae_pct": float(err.mean()),
                        "vega_weighted_mae_pct": float(np.sum(vega * err) / np.sum(vega))}
    with duckdb.connect(str(db)) as store:
        store.execute("CREATE TABLE IF NOT EXISTS peer_runs (created_at TIMESTAMP, underlying VARCHAR, "
                      "n BIGINT, multiplier DOUBLE, vw_mae_pct DOUBLE)")
        store.execute("INSERT INTO peer_runs VALUES (now(), ?, ?, ?, ?)",
                      [underlying, int(k.size), float(fit.x), scores["recommended"]["vega_weighted_mae_pct"]])
    return {"rows_used": int(k.size), "evaluations": int(fit.nfev), "rv_s": t_rv - t0, "read_s": t_read,
            "total_s": time.perf_counter() - t0, "scores": scores}


def main(argv: list[str]) -> int:
    """`python -m calib.bench.peers duckdb '{"data_dir": ..., "start": ISO, "end": ISO, "db": ...}'`."""
    if len(argv) != 2 or argv[0] != "duckdb":
        print("usage: python -m calib.bench.peers duckdb SPEC_JSON", file=sys.stderr)
        return 2
    spec = json.loads(argv[1])
    out = duckdb_peer(Path(spec["data_dir"]), spec.get("underlying", "BTC"), datetime.fromisoformat(spec["start"]),
                      datetime.fromisoformat(spec["end"]), Path(spec["db"]))
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

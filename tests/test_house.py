"""Where code lives (issue 14): SQL only in the store and the read API."""

from __future__ import annotations

import re
from pathlib import Path

CALIB = Path(__file__).resolve().parents[1] / "calib"
# DuckDB as a calculator over Parquet (the benchmark's peer), not the history file.
SQL_HOMES = ("store/", "queries.py", "bench/peers.py")
SQL_CALL = re.compile(r"\.(execute|executemany|sql)\(")


def test_sql_only_in_store_and_queries() -> None:
    outside = sorted(
        f"{p.relative_to(CALIB)}:{n}"
        for p in CALIB.rglob("*.py")
        if not str(p.relative_to(CALIB)).startswith(SQL_HOMES)
        for n, line in enumerate(p.read_text().splitlines(), 1)
        if SQL_CALL.search(line)
    )
    assert outside == [], f"SQL outside calib/store/ and calib/queries.py: {outside}"


MAX_LINES = 600


def test_no_module_over_600_lines() -> None:
    sizes = {str(p.relative_to(CALIB)): len(p.read_text().splitlines()) for p in CALIB.rglob("*.py")}
    over = sorted(name for name, n in sizes.items() if n > MAX_LINES)
    assert over == [], f"modules over {MAX_LINES} lines: {over}"


def test_shells_under_600_lines() -> None:
    """cli.py and app.py parse, call a service and render: the rendering itself lives in calib."""
    sizes = {name: len((CALIB.parent / name).read_text().splitlines()) for name in ("cli.py", "app.py")}
    assert max(sizes.values()) <= MAX_LINES, sizes

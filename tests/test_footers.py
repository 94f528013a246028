"""Each Parquet footer of a window is read once per run (listing, row estimate and index series share it)."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from calib.calibration import run_historical_calibration_from_harvest
from calib.config import CalibrationConfig, HarvestConfig
from calib.data.demo import DemoSpec, generate_demo_harvest

END = datetime(2025, 3, 1, tzinfo=UTC)


@pytest.mark.parametrize("chunked", [False, True])
def test_each_footer_is_read_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, chunked: bool) -> None:
    generate_demo_harvest(tmp_path, DemoSpec(underlyings=("BTC",), end=END, days=10, step_minutes=60,
                                             max_instruments=100))
    import polars as pl

    reads: Counter[str] = Counter()
    real_md, real_schema, real_pl_md = pq.read_metadata, pl.read_parquet_schema, pl.read_parquet_metadata

    def counted(real):  # type: ignore[no-untyped-def]
        def read(path, *a, **kw):  # type: ignore[no-untyped-def]
            reads[str(path)] += 1
            return real(path, *a, **kw)
        return read

    monkeypatch.setattr(pq, "read_metadata", counted(real_md))
    monkeypatch.setattr(pl, "read_parquet_schema", counted(real_schema))
    monkeypatch.setattr(pl, "read_parquet_metadata", counted(real_pl_md))
    config = CalibrationConfig(underlying="BTC", lookback_days=3.0, multiplier_tested=1.0,
                               harvest=HarvestConfig(data_root=tmp_path, end_time=END))
    result = run_historical_calibration_from_harvest(config, chunk_threshold_rows=0 if chunked else None)
    assert result.data_quality.extra["engine_path"] == ("chunked" if chunked else "in_memory")
    assert reads and set(reads.values()) == {1}, reads.most_common(3)
    assert len(reads) == len(list((tmp_path / "BTC").rglob("*.parquet")))

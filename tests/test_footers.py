"""Each Parquet footer of a window is read once per run (listing, row estimate and index series share it)."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from calib.calibration import run_historical_calibration_from_harvest
from calib.config import CalibrationConfig, HarvestConfig
from calib.data import footer
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
            if not isinstance(path, bytes):  # parsing a footer already read (`read_footer_bytes`) reads no file
                reads[str(path)] += 1
            return real(path, *a, **kw)
        return read

    monkeypatch.setattr(pq, "read_metadata", counted(real_md))
    monkeypatch.setattr(pl, "read_parquet_schema", counted(real_schema))
    monkeypatch.setattr(pl, "read_parquet_metadata", counted(real_pl_md))
    monkeypatch.setattr(footer, "read_footer_bytes", counted(footer.read_footer_bytes))
    config = CalibrationConfig(underlying="BTC", lookback_days=3.0, multiplier_tested=1.0,
                               harvest=HarvestConfig(data_root=tmp_path, end_time=END))
    result = run_historical_calibration_from_harvest(config, chunk_threshold_rows=0 if chunked else None)
    assert result.data_quality.extra["engine_path"] == ("chunked" if chunked else "in_memory")
    assert reads and set(reads.values()) == {1}, reads.most_common(3)
    assert len(reads) == len(list((tmp_path / "BTC").rglob("*.parquet")))


def test_footer_is_what_pyarrow_reads(tmp_path: Path) -> None:
    """`read_footer` (the file's tail, parsed by polars) gives pyarrow's row count and key-value metadata,
    and polars' dtypes with dictionary-encoded strings as String; a cut file fails, a missing one is
    FileNotFoundError (the reader reports the first and stops on the second)."""
    import pyarrow as pa

    from calib.data.footer import INDEX_METADATA_KEY, read_footer

    table = pa.table({
        "snapshot_ts": pa.array([1, 2, 3], pa.timestamp("ms", "UTC")),
        "instrument_name": pa.array(["BTC-1", "BTC-2", "BTC-1"]).dictionary_encode(),
        "option_type": pa.array(["C", "P", "C"], pa.large_string()),
        "mark_price": pa.array([0.1, 0.2, 0.3]),
        "n": pa.array([1, 2, 3], pa.int32()),
    }).replace_schema_metadata({INDEX_METADATA_KEY: '{"ts": [1]}'})
    path = tmp_path / "f.parquet"
    pq.write_table(table, path, row_group_size=2)
    f = read_footer(path)
    md = pq.read_metadata(path)
    assert f.num_rows == md.num_rows == 3 and md.num_row_groups == 2
    assert f.index_meta == '{"ts": [1]}'
    import polars as pl

    assert dict(f.schema) == {"snapshot_ts": pl.Datetime("ms", "UTC"), "instrument_name": pl.String(),
                              "option_type": pl.String(), "mark_price": pl.Float64(), "n": pl.Int32()}
    cut = tmp_path / "cut.parquet"
    cut.write_bytes(path.read_bytes()[:-5])
    with pytest.raises(ValueError, match="not a Parquet file"):
        read_footer(cut)
    with pytest.raises(FileNotFoundError):
        read_footer(tmp_path / "missing.parquet")

"""A harvest file's Parquet footer, read once: its schema, row count and calib's index series metadata.

Listing a window (`find_harvest_files`), its row estimate (`estimate_rows`) and
the index series (`read_index_series`, from the footer's `calib.index_spot`
entry) all use what one read of each footer gave.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

INDEX_METADATA_KEY = "calib.index_spot"


@dataclass(frozen=True, slots=True, kw_only=True)
class ParquetFooter:
    schema: pl.Schema  # as polars reads the file (`pl.read_parquet_schema`)
    num_rows: int
    index_meta: str | None  # the footer's `INDEX_METADATA_KEY` value, as written


def read_footer(path: str | Path) -> ParquetFooter:
    """One read of `path`'s footer. Raises what pyarrow raises on a missing, truncated or non-Parquet file."""
    md = pq.read_metadata(path)
    kv = md.metadata or {}
    raw = kv.get(INDEX_METADATA_KEY.encode())
    schema = _polars_schema(md.schema.to_arrow_schema())
    if schema is None:  # a type the table below does not name: ask polars (a second footer read, rare)
        schema = pl.read_parquet_schema(path)
    return ParquetFooter(schema=pl.Schema(schema), num_rows=int(md.num_rows),
                         index_meta=None if raw is None else raw.decode())


_SIMPLE: dict[pa.DataType, pl.DataType] = {
    pa.float64(): pl.Float64(), pa.float32(): pl.Float32(), pa.int64(): pl.Int64(), pa.int32(): pl.Int32(),
    pa.int16(): pl.Int16(), pa.int8(): pl.Int8(), pa.uint64(): pl.UInt64(), pa.uint32(): pl.UInt32(),
    pa.uint16(): pl.UInt16(), pa.uint8(): pl.UInt8(), pa.bool_(): pl.Boolean(), pa.string(): pl.String(),
    pa.large_string(): pl.String(), pa.string_view(): pl.String(), pa.date32(): pl.Date(),
}


def _polars_schema(schema: pa.Schema) -> dict[str, pl.DataType] | None:
    """The polars dtypes of the harvest's column types (`pl.from_arrow` would cost ~150 ms and numpy.ma)."""
    out: dict[str, pl.DataType] = {}
    for f in schema:
        t = f.type
        if pa.types.is_timestamp(t):
            out[f.name] = pl.Datetime(t.unit, t.tz)  # type: ignore[arg-type]
        elif pa.types.is_dictionary(t) and t.value_type in (pa.string(), pa.large_string()):
            out[f.name] = pl.String()
        elif t in _SIMPLE:
            out[f.name] = _SIMPLE[t]
        else:
            return None
    return out


__all__ = ["INDEX_METADATA_KEY", "ParquetFooter", "read_footer"]

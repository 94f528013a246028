"""A harvest file's Parquet footer, read once: its schema, row count and calib's index series metadata.

Listing a window (`find_harvest_files`), its row estimate (`estimate_rows`) and
the index series (`read_index_series`, from the footer's `calib.index_spot`
entry) all use what one read of each footer gave.

The footer is read from the end of the file once (`read_footer_bytes`) and
parsed by polars, not pyarrow: a run needs no pyarrow at all (its import is
~20-30 ms and ~33 MB of resident memory of every run).
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from pathlib import Path

import polars as pl

INDEX_METADATA_KEY = "calib.index_spot"
_MAGIC = b"PAR1"
_ENCRYPTED_MAGIC = b"PARE"  # Parquet modular encryption with an encrypted footer
_TAIL = struct.Struct("<I4s")  # a Parquet file ends with the footer's length (4 bytes LE) and "PAR1"


@dataclass(frozen=True, slots=True, kw_only=True)
class ParquetFooter:
    schema: pl.Schema  # as polars reads the file (`pl.read_parquet_schema`), categoricals as String
    num_rows: int
    index_meta: str | None  # the footer's `INDEX_METADATA_KEY` value, as written


def read_footer_bytes(path: str | Path) -> bytes:
    """`path`'s footer as a Parquet buffer polars can parse: "PAR1", the footer, its length, "PAR1".

    The one read of the file (its tail). Raises FileNotFoundError for a missing file and
    ValueError for one too short or not ending like Parquet (a truncated write).
    """
    with open(path, "rb") as f:
        size = f.seek(0, os.SEEK_END)
        if size < len(_MAGIC) + _TAIL.size:
            raise ValueError(f"{path} is not a Parquet file ({size} bytes)")
        f.seek(size - _TAIL.size)
        length, magic = _TAIL.unpack(f.read(_TAIL.size))
        if magic == _ENCRYPTED_MAGIC:
            raise ValueError(f"{path} has an encrypted Parquet footer: calib reads plain Parquet only")
        if magic != _MAGIC or length + _TAIL.size + len(_MAGIC) > size:
            raise ValueError(f"{path} is not a Parquet file or was cut short (no footer at its end)")
        f.seek(size - _TAIL.size - length)
        footer = f.read(length)
    return _MAGIC + footer + _TAIL.pack(length, _MAGIC)


def read_footer(path: str | Path) -> ParquetFooter:
    """One read of `path`'s footer. Raises FileNotFoundError on a missing file; ValueError (or another
    Exception) on a truncated, damaged or non-Parquet one."""
    tail = read_footer_bytes(path)
    try:
        schema = {name: pl.String() if isinstance(dtype, pl.Categorical | pl.Enum) else dtype
                  for name, dtype in pl.read_parquet_schema(tail).items()}
        raw = pl.read_parquet_metadata(tail).get(INDEX_METADATA_KEY)
        # The row count from the footer's row groups (polars reads no data page for a bare count).
        num_rows = int(pl.scan_parquet(tail).select(pl.len()).collect().item())
    except pl.exceptions.PanicException as e:
        # Some damaged footers make polars' Thrift decoding panic; a PanicException is a
        # BaseException, which the listing's "report the file, keep going" would let through.
        raise ValueError(f"{path}: its Parquet footer could not be parsed ({e})") from None
    return ParquetFooter(schema=pl.Schema(schema), num_rows=num_rows, index_meta=raw)


__all__ = ["INDEX_METADATA_KEY", "ParquetFooter", "read_footer", "read_footer_bytes"]

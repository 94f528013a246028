"""The gzip CSV stream: a file read in bounded blocks of record batches, never whole."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow as pa
import pyarrow.csv as pacsv

from calib.data.tardis.common import CHUNK_ROWS, MAX_BLOCK_BYTES
from calib.errors import InvalidInputError


def _compression(path: Path) -> str | None:
    """``"gzip"`` when the file starts with the gzip magic bytes, whatever its name."""
    with open(path, "rb") as fh:
        return "gzip" if fh.read(2) == b"\x1f\x8b" else None


def read_header(path: Path) -> list[str]:
    """Column names from the first line of a (possibly gzip-compressed) CSV."""
    try:
        with pa.input_stream(str(path), compression=_compression(path)) as stream:
            head = b""
            while b"\n" not in head:
                chunk = stream.read(1 << 16)
                if not chunk:
                    break
                head += chunk
    except (OSError, pa.ArrowInvalid) as e:
        raise InvalidInputError(f"cannot read {path}: {e}") from e
    line = head.split(b"\n", 1)[0].decode("utf-8", errors="replace").strip().lstrip("\ufeff")
    return [name.strip() for name in line.split(",")] if line else []


def iter_csv_blocks(
    path: Path,
    columns: Sequence[str],
    required: Sequence[str],
    max_rows: int,
    bad_lines: dict[str, int],
) -> Iterator[pl.DataFrame]:
    """Yield frames of at most ``min(max_rows, 50_000)`` rows, all columns nullable strings.

    Reading as strings keeps one bad value from failing a whole block: numbers
    are cast later, where a failed cast is counted per row. Rows with the wrong
    number of fields are dropped by the parser and counted in
    ``bad_lines["unparsable"]``. The parser's blocks stay at or below 1 MiB
    of text, since larger blocks only make the threaded reader buffer more
    (8 MiB blocks cost ~110 MB more peak memory); several blocks are joined
    into one frame so each polars query has enough rows to amortize its
    fixed cost.
    """
    header = read_header(path)
    missing = [name for name in required if name not in header]
    if missing:
        raise InvalidInputError(
            f"{path} is not a Tardis {'options_chain' if 'symbol' in required else 'index'} CSV: "
            f"missing column(s) {', '.join(missing)}; header is {','.join(header) or '(empty)'}"
        )
    include = [name for name in columns if name in header]
    absent = [name for name in columns if name not in include]

    def on_invalid_row(_row: Any) -> str:
        bad_lines["unparsable"] = bad_lines.get("unparsable", 0) + 1
        return "skip"

    block_bytes = int(min(max(max_rows * 200, 1 << 14), MAX_BLOCK_BYTES))  # ~200 bytes a row
    read_options = pacsv.ReadOptions(block_size=block_bytes)
    parse_options = pacsv.ParseOptions(invalid_row_handler=on_invalid_row)
    convert_options = pacsv.ConvertOptions(
        include_columns=include,
        column_types={name: pa.string() for name in include},
        null_values=[""],
        strings_can_be_null=True,
    )
    try:
        with pa.input_stream(str(path), compression=_compression(path)) as stream:
            reader = pacsv.open_csv(
                stream,
                read_options=read_options,
                parse_options=parse_options,
                convert_options=convert_options,
            )
            chunk_rows = min(max_rows, CHUNK_ROWS)
            pieces: list[pa.RecordBatch] = []
            n_pieces = 0
            for batch in reader:
                offset = 0
                while offset < batch.num_rows:
                    piece = batch.slice(offset, chunk_rows - n_pieces)
                    pieces.append(piece)
                    n_pieces += piece.num_rows
                    offset += piece.num_rows
                    if n_pieces >= chunk_rows:
                        yield _frame(pieces, absent)
                        pieces, n_pieces = [], 0
            if pieces:
                yield _frame(pieces, absent)
    except (OSError, pa.ArrowInvalid) as e:
        raise InvalidInputError(f"cannot read {path}: {e}") from e


def _frame(pieces: list[pa.RecordBatch], absent: Sequence[str]) -> pl.DataFrame:
    frame = pl.from_arrow(pa.Table.from_batches(pieces))
    assert isinstance(frame, pl.DataFrame)
    if absent:
        frame = frame.with_columns(pl.lit(None, pl.String).alias(name) for name in absent)
    return frame


# --------------------------------------------------------------------------- cleaning

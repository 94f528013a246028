"""Stream Tardis.dev `options_chain` CSV(.gz) files into harvested snapshots (SPEC section 2).

Tardis' `options_chain` dataset is one row per ticker update of one option
(tens of millions of rows a day for Deribit BTC). This module replays those
updates in timestamp order, keeps the last known state of every live
instrument and, at every multiple of `every` since the epoch (12:00, 12:05,
...), writes that state as one harvested snapshot with `snapshot_ts` = the
boundary. Nothing is loaded whole: files are read in record batches through a
gzip-decompressing stream, and the carried state is bounded by the number of
live instruments.

Input columns (Tardis docs, "Downloadable CSV files", data type
`options_chain`), in order: ``exchange, symbol, timestamp, local_timestamp,
type, strike_price, expiration, open_interest, last_price, bid_price,
bid_amount, bid_iv, ask_price, ask_amount, ask_iv, mark_price, mark_iv,
underlying_index, underlying_price, delta, gamma, vega, theta, rho``.
Timestamps and `expiration` are microseconds since the epoch, UTC.

Units, and why no conversion is applied:

- prices (`mark_price`, `bid_price`, `ask_price`) are Deribit's, in coin;
- IVs (`mark_iv`, `bid_iv`, `ask_iv`) are Deribit's ticker values, in
  **percent**: the documented Tardis sample row for Deribit reads
  ``...,bid_iv=55.91,...,ask_iv=68.94,mark_price=0.02210436,mark_iv=62.89,
  underlying_index=SYN.BTC-9JUN20,underlying_price=9756.36,...`` and real
  2020-07-01 files read ``mark_iv=49.5`` for a 0.0035 BTC call. The harvest
  contract wants percent too, so IVs pass through unchanged;
- `underlying_price` is the USD forward of the option's expiry (the future
  named in `underlying_index`, or a synthetic `SYN.<COIN>-<EXPIRY>` forward);
  Tardis carries no spot index for options, see `index_price` below.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.csv as pacsv

from calib._typing import UNDERLYINGS
from calib.data.layout import atomic_write_parquet, snapshot_path
from calib.data.schema import HARVEST_SCHEMA, INSTRUMENT_PATTERN
from calib.errors import InvalidInputError, NoDataError

IndexSource = Literal["index_file", "nearest_forward", "none"]
IndexFallback = Literal["nearest_forward", "none"]

TARDIS_OPTIONS_CHAIN_COLUMNS: tuple[str, ...] = (
    "exchange",
    "symbol",
    "timestamp",
    "local_timestamp",
    "type",
    "strike_price",
    "expiration",
    "open_interest",
    "last_price",
    "bid_price",
    "bid_amount",
    "bid_iv",
    "ask_price",
    "ask_amount",
    "ask_iv",
    "mark_price",
    "mark_iv",
    "underlying_index",
    "underlying_price",
    "delta",
    "gamma",
    "vega",
    "theta",
    "rho",
)
# Columns a row cannot do without; a file lacking one of them is not an options_chain file.
_REQUIRED_INPUT: tuple[str, ...] = (
    "exchange",
    "symbol",
    "timestamp",
    "type",
    "strike_price",
    "expiration",
    "mark_price",
    "underlying_price",
)
_REQUIRED_FLOATS: tuple[str, ...] = ("strike", "mark_price", "underlying_price")
# Nullable float columns copied as they are (same name in Tardis and in the harvest schema).
_OPTIONAL_FLOATS: tuple[str, ...] = (
    "mark_iv",
    "bid_price",
    "ask_price",
    "bid_iv",
    "ask_iv",
    "open_interest",
    "delta",
    "gamma",
    "vega",
    "theta",
)
_EXCHANGE = "deribit"
_US_PER_S = 1_000_000
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_PROGRESS_EVERY_ROWS = 1_000_000
_MAX_BLOCK_BYTES = 1 << 20  # CSV text parsed per block (see `_iter_csv_blocks`)
_CHUNK_ROWS = 50_000  # raw rows typed per polars query
_MIN_INDEX_TOLERANCE = timedelta(minutes=5)
_EVERY_PATTERN = re.compile(r"^\s*(\d+)\s*([smhd]?)\s*$", re.IGNORECASE)
_EVERY_UNITS_S = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}

# The carried per-instrument state: one row per (window, instrument) or per instrument.
_STATE_SCHEMA: dict[str, pl.DataType] = {
    "ts": pl.Int64(),
    "bnd": pl.Int64(),
    "instrument_name": pl.String(),
    "expiry_us": pl.Int64(),
    "strike": pl.Float64(),
    "option_type": pl.String(),
    "mark_price": pl.Float64(),
    "underlying_price": pl.Float64(),
    **{name: pl.Float64() for name in _OPTIONAL_FLOATS},
}


@dataclass(frozen=True, slots=True, kw_only=True)
class TardisImportResult:
    """What `import_tardis` read, skipped and wrote.

    `skipped` maps a reason to a row count (first matching reason wins):
    `other_exchange`, `linear_usdc` (`BTC_USDC-...` options), `other_underlying`,
    `unparsable` (wrong field count, empty or non-numeric required field,
    non-numeric optional field, unknown `type`, malformed symbol), `invalid_value`
    (non-positive strike, forward or timestamp; negative mark), `zero_mark`
    (mark_price 0: the instrument leaves the snapshots until its next
    non-zero mark), `out_of_order` (timestamp at or before a boundary already
    written) and, for the index file, `index_unparsable` / `index_other_symbol`.
    """

    rows_read: int
    snapshots_written: int
    files_written: int
    instruments: int
    skipped: dict[str, int]
    first_snapshot: datetime | None
    last_snapshot: datetime | None
    data_root: Path
    index_source: IndexSource = "nearest_forward"
    snapshots_without_index: int = 0
    intervals_without_data: int = 0
    files: tuple[Path, ...] = field(default=())

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready mapping (datetimes as ISO-8601 strings, paths as strings)."""
        return {
            "rows_read": self.rows_read,
            "snapshots_written": self.snapshots_written,
            "files_written": self.files_written,
            "instruments": self.instruments,
            "skipped": dict(self.skipped),
            "first_snapshot": self.first_snapshot.isoformat() if self.first_snapshot else None,
            "last_snapshot": self.last_snapshot.isoformat() if self.last_snapshot else None,
            "data_root": str(self.data_root),
            "index_source": self.index_source,
            "snapshots_without_index": self.snapshots_without_index,
            "intervals_without_data": self.intervals_without_data,
            "files": [str(p) for p in self.files],
        }


def parse_every(text: str) -> timedelta:
    """Parse a snapshot interval: ``"30s"``, ``"5m"``, ``"1h"``, ``"1d"`` or bare seconds ``"300"``.

    Raises
    ------
    InvalidInputError
        When the text is not a positive whole number with an optional s/m/h/d unit.
    """
    match = _EVERY_PATTERN.match(text)
    if match is None or int(match.group(1)) <= 0:
        raise InvalidInputError(
            f"`every` must be a positive interval like 30s, 5m, 1h or 300 (seconds); got {text!r}"
        )
    return timedelta(seconds=int(match.group(1)) * _EVERY_UNITS_S[match.group(2).lower()])


def import_tardis(
    paths: Sequence[Path],
    *,
    underlying: str,
    every: timedelta = timedelta(minutes=5),
    data_root: Path,
    index_file: Path | None = None,
    batch_rows: int = 500_000,
    progress: Callable[[str], None] | None = None,
    index_fallback: IndexFallback = "nearest_forward",
    reorder_window: timedelta = timedelta(seconds=60),
    snapshots_per_file: int = 72,
) -> TardisImportResult:
    """Import Tardis `options_chain` files as harvested snapshots under `data_root`.

    Parameters
    ----------
    paths
        Tardis `options_chain` CSV files (``.csv`` or ``.csv.gz``), read in the
        order given; consecutive days should be passed together so the state
        carries over midnight.
    underlying
        ``"BTC"`` or ``"ETH"``; other currencies and linear ``<COIN>_USDC``
        options are skipped and counted.
    every
        Snapshot interval; boundaries are the multiples of `every` since the epoch.
    data_root
        Harvest root: files go to ``<data_root>/<UNDERLYING>/date=YYYY-MM-DD/
        tardis_YYYYMMDDTHHMMSSZ.parquet`` (named after their first snapshot),
        written atomically, in exactly `HARVEST_SCHEMA`.
    index_file
        Optional CSV with a microsecond `timestamp` column and an `index_price`
        (Tardis `derivative_ticker`) or `price` column; each snapshot takes the
        last value at or before its boundary, if not older than
        ``max(every, 5 min)``. With a `symbol` column only rows whose symbol
        starts with ``<UNDERLYING>-`` are used.
    batch_rows
        Rows read per state update; bounds memory (about 440 MB peak at the
        default, 330 MB at 100_000). It never changes the output as long as
        timestamps stay within `reorder_window` of file order.
    progress
        Called with one human-readable line at each file start and every ~1M rows.
    index_fallback
        Without `index_file`: ``"nearest_forward"`` (default) writes the
        forward of the nearest live expiry (the latest update among its
        instruments) as `index_price`, a proxy for spot that is within the
        basis of a days-away future; the result's `index_source` says so.
        ``"none"`` leaves it null so readers apply their own fallback and
        grade the data as degraded (SPEC section 2).
    reorder_window
        How far exchange timestamps may run out of file order (Tardis rows
        follow arrival time, and a day file opens with each instrument's
        state stamped seconds before midnight). A boundary is written once a
        row this much later has been seen; rows arriving after their boundary
        was written are skipped as `out_of_order`.
    snapshots_per_file
        Snapshots buffered per output file (files also never span a UTC day);
        windows are aligned to the epoch so re-imports produce the same names.

    Returns
    -------
    TardisImportResult

    Raises
    ------
    InvalidInputError
        Bad arguments, or a file that is not a Tardis `options_chain` CSV
        (missing columns, unreadable stream).
    NoDataError
        A path that does not exist.

    Notes
    -----
    Semantics, per boundary ``B``: an instrument's state is its update with
    the greatest `timestamp` ``<= B`` (ties: the later row in the file); the
    snapshot holds every instrument with ``expiration > B`` whose state has a
    positive mark. The first boundary is the first multiple of `every`
    strictly after the first row; the last one is at or before the last row.
    A boundary whose interval ``(B - every, B]`` holds no row at all is not
    written (counted in `intervals_without_data`) rather than repeating a
    stale chain.
    """
    und = _check_underlying(underlying)
    if not paths:
        raise InvalidInputError(
            "`paths` must name at least one Tardis options_chain file; got none"
        )
    if every < timedelta(seconds=1):
        raise InvalidInputError(f"`every` must be at least 1 second; got {every}")
    if batch_rows < 1:
        raise InvalidInputError(f"`batch_rows` must be a positive row count; got {batch_rows}")
    if snapshots_per_file < 1:
        raise InvalidInputError(f"`snapshots_per_file` must be positive; got {snapshots_per_file}")
    if reorder_window < timedelta(0):
        raise InvalidInputError(f"`reorder_window` must not be negative; got {reorder_window}")
    if index_fallback not in ("nearest_forward", "none"):
        raise InvalidInputError(
            f"`index_fallback` must be one of nearest_forward, none; got {index_fallback!r}"
        )
    files = [Path(p) for p in paths]
    for path in [*files, *([Path(index_file)] if index_file is not None else [])]:
        if not path.is_file():
            raise NoDataError(f"Tardis file not found: {path}")

    every_us = _to_us(every)
    skipped: dict[str, int] = {}
    index = (
        _IndexSeries.from_file(
            Path(index_file),
            underlying=und,
            every_us=every_us,
            tolerance_us=_to_us(max(every, _MIN_INDEX_TOLERANCE)),
            batch_rows=batch_rows,
            skipped=skipped,
        )
        if index_file is not None
        else None
    )
    importer = _Importer(
        underlying=und,
        every_us=every_us,
        reorder_us=_to_us(reorder_window),
        data_root=Path(data_root),
        index=index,
        index_fallback=index_fallback,
        snapshots_per_file=snapshots_per_file,
        skipped=skipped,
    )
    say = progress or (lambda _line: None)
    started = time.perf_counter()
    next_report = _PROGRESS_EVERY_ROWS
    bad_lines: dict[str, int] = {}  # rows the CSV parser rejected (wrong field count)
    classify = _Classifier(und, every_us)
    # Raw text is typed and filtered block by block; only this underlying's typed rows
    # are gathered into batches of `batch_rows` read rows, then merged into the state.
    typed: list[pl.DataFrame] = []
    n_raw = 0
    for path in files:
        say(f"tardis: reading {path}")
        for raw in _iter_csv_blocks(
            path, TARDIS_OPTIONS_CHAIN_COLUMNS, _REQUIRED_INPUT, batch_rows, bad_lines
        ):
            importer.rows_parsed += raw.height
            n_raw += raw.height
            typed.append(classify(raw, skipped))
            if n_raw >= batch_rows:
                importer.feed(classify.finish(typed, skipped))
                typed, n_raw = [], 0
            if importer.rows_parsed >= next_report:
                say(_progress_line(importer, skipped, started))
                next_report += _PROGRESS_EVERY_ROWS
        if typed:  # a file ends a batch: rows of the next file come after it
            importer.feed(classify.finish(typed, skipped))
            typed, n_raw = [], 0
    importer.finish()
    n_bad_lines = bad_lines.get("unparsable", 0)
    _add(skipped, "unparsable", n_bad_lines)
    say(_progress_line(importer, skipped, started) + " (done)")
    return importer.result(skipped, rows_read=importer.rows_parsed + n_bad_lines)


# --------------------------------------------------------------------------- reading


def _check_underlying(underlying: str) -> str:
    und = str(underlying).strip().upper()
    if und not in UNDERLYINGS:
        raise InvalidInputError(
            f"`underlying` must be one of {', '.join(UNDERLYINGS)}; got {underlying!r}"
        )
    return und


def _to_us(delta: timedelta) -> int:
    return (delta.days * 86_400 + delta.seconds) * _US_PER_S + delta.microseconds


def _compression(path: Path) -> str | None:
    """``"gzip"`` when the file starts with the gzip magic bytes, whatever its name."""
    with open(path, "rb") as fh:
        return "gzip" if fh.read(2) == b"\x1f\x8b" else None


def _read_header(path: Path) -> list[str]:
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


def _iter_csv_blocks(
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
    header = _read_header(path)
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

    block_bytes = int(min(max(max_rows * 200, 1 << 14), _MAX_BLOCK_BYTES))  # ~200 bytes a row
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
            chunk_rows = min(max_rows, _CHUNK_ROWS)
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


def _finite_or_null(expr: pl.Expr) -> pl.Expr:
    return pl.when(expr.is_finite()).then(expr)


class _Classifier:
    """Types raw string blocks, counts bad rows by reason and keeps the usable ones.

    The expressions are built once per import; each block then runs as one
    polars query (`collect_all` shares the scan between the counts and the
    rows). Rows of other exchanges and currencies are dropped on two cheap
    string tests before anything is cast. Usable rows include `zero_mark`
    rows (still counted as skipped): they are the instrument's latest state,
    so an older non-zero mark must not linger in the snapshots.
    """

    def __init__(self, underlying: str, every_us: int) -> None:
        symbol = pl.col("symbol")
        self.scope = (
            pl.when(pl.col("exchange").is_null() | symbol.is_null())
            .then(pl.lit("unparsable"))
            .when(pl.col("exchange") != _EXCHANGE)
            .then(pl.lit("other_exchange"))
            .when(symbol.str.starts_with(f"{underlying}-"))
            .then(pl.lit(None, pl.String))
            .when(symbol.str.starts_with(f"{underlying}_"))
            .then(pl.lit("linear_usdc"))
            .otherwise(pl.lit("other_underlying"))
            .alias("_reason")
        )

        def number(name: str) -> pl.Expr:
            return pl.col(name).cast(pl.Float64, strict=False)

        self.typed = [
            symbol.alias("instrument_name"),
            pl.col("type")
            .replace_strict({"call": "C", "put": "P"}, default=None, return_dtype=pl.String)
            .alias("option_type"),
            pl.col("timestamp").cast(pl.Int64, strict=False).alias("ts"),
            pl.col("expiration").cast(pl.Int64, strict=False).alias("expiry_us"),
            number("strike_price").alias("strike"),
            number("mark_price").alias("mark_price"),
            number("underlying_price").alias("underlying_price"),
            # text that is present but not a number (empty cells are plain nulls)
            pl.any_horizontal(
                pl.col(name).is_not_null() & number(name).is_null() for name in _OPTIONAL_FLOATS
            ).alias("_garbage"),
            *(_finite_or_null(number(name)).alias(name) for name in _OPTIONAL_FLOATS),
        ]
        unparsable = pl.any_horizontal(
            pl.col("ts").is_null(),
            pl.col("expiry_us").is_null(),
            pl.col("option_type").is_null(),
            pl.col("_garbage"),
            *(~pl.col(name).is_finite().fill_null(False) for name in _REQUIRED_FLOATS),
        )
        invalid = (
            (pl.col("ts") <= 0)
            | (pl.col("expiry_us") <= 0)
            | (pl.col("strike") <= 0)
            | (pl.col("underlying_price") <= 0)
            | (pl.col("mark_price") < 0)
        )
        self.reason = (
            pl.when(unparsable)
            .then(pl.lit("unparsable"))
            .when(invalid)
            .then(pl.lit("invalid_value"))
            .otherwise(pl.lit(None, pl.String))
            .alias("_reason")
        )
        self.bnd = (((pl.col("ts") + (every_us - 1)) // every_us) * every_us).alias("bnd")
        self.columns = list(_STATE_SCHEMA)

    def __call__(self, raw: pl.DataFrame, skipped: dict[str, int]) -> pl.DataFrame:
        """Typed rows of one raw block, before the name and zero-mark checks of `finish`."""
        scoped = raw.lazy().with_columns(self.scope)
        typed = (
            scoped.filter(pl.col("_reason").is_null()).select(self.typed).with_columns(self.reason)
        )
        out_of_scope, bad, usable = pl.collect_all(
            [
                scoped.group_by("_reason").len(),
                typed.group_by("_reason").len(),
                typed.filter(pl.col("_reason").is_null())
                .with_columns(self.bnd)
                .select(self.columns),
            ]
        )
        for counts in (out_of_scope, bad):
            for name, n in counts.iter_rows():
                if name is not None:
                    skipped[name] = skipped.get(name, 0) + int(n)
        return usable

    @staticmethod
    def finish(typed: list[pl.DataFrame], skipped: dict[str, int]) -> pl.DataFrame:
        """One batch of typed blocks: drop malformed names, count zero marks.

        Names are checked once per distinct symbol (a regex on every row would
        cost more than all the casts). Zero-mark rows stay in the batch.
        """
        batch = pl.concat(typed)
        names = batch.get_column("instrument_name").unique()
        bad_names = names.filter(~names.str.contains(INSTRUMENT_PATTERN))
        if bad_names.len():
            bad = batch.get_column("instrument_name").is_in(bad_names.implode())
            _add(skipped, "unparsable", int(bad.sum()))
            batch = batch.filter(~bad)
        _add(skipped, "zero_mark", int((batch.get_column("mark_price") == 0).sum()))
        return batch


# --------------------------------------------------------------------------- index


@dataclass(frozen=True, slots=True)
class _IndexSeries:
    """Last index value per `every` window, for as-of look-ups at boundaries."""

    window_end_us: np.ndarray
    obs_ts_us: np.ndarray
    price_usd: np.ndarray
    tolerance_us: int

    @classmethod
    def from_file(
        cls,
        path: Path,
        *,
        underlying: str,
        every_us: int,
        tolerance_us: int,
        batch_rows: int,
        skipped: dict[str, int],
    ) -> _IndexSeries:
        header = _read_header(path)
        value = "index_price" if "index_price" in header else "price"
        if value not in header:
            raise InvalidInputError(
                f"index file {path} needs an `index_price` or `price` column; "
                f"header is {','.join(header) or '(empty)'}"
            )
        columns = ["timestamp", value, *(["symbol"] if "symbol" in header else [])]
        parts: list[pl.DataFrame] = []
        counter: dict[str, int] = {}
        for raw in _iter_csv_blocks(path, columns, ["timestamp", value], batch_rows, counter):
            ts = pl.col("timestamp").cast(pl.Int64, strict=False)
            price = pl.col(value).cast(pl.Float64, strict=False)
            other = pl.col("symbol").is_not_null() & ~pl.col(
                "symbol"
            ).str.to_uppercase().str.starts_with(f"{underlying}-")
            bad_ts = ~(ts > 0).fill_null(False)
            bad_price = pl.col(value).is_not_null() & ~(price > 0).fill_null(False)
            if "symbol" not in raw.columns:
                raw = raw.with_columns(symbol=pl.lit(None, pl.String))
            df = raw.select(
                ts=ts,
                price=price,
                other=other,
                bad=~other & (bad_ts | bad_price),
            )
            _add(skipped, "index_other_symbol", int(df.get_column("other").sum()))
            _add(skipped, "index_unparsable", int(df.get_column("bad").sum()))
            # An empty index_price (derivative_ticker rows that only move funding) is no error.
            usable = df.filter(~pl.col("other") & ~pl.col("bad") & pl.col("price").is_not_null())
            parts.append(_last_per_window(usable.select("ts", "price"), every_us))
        _add(skipped, "index_unparsable", counter.get("unparsable", 0))
        series = (
            _last_per_window(pl.concat(parts), every_us).sort("bnd")
            if parts
            else pl.DataFrame(schema={"bnd": pl.Int64, "ts": pl.Int64, "price": pl.Float64})
        )
        return cls(
            window_end_us=series.get_column("bnd").to_numpy(),
            obs_ts_us=series.get_column("ts").to_numpy(),
            price_usd=series.get_column("price").to_numpy(),
            tolerance_us=tolerance_us,
        )

    def at(self, boundary_us: int) -> float | None:
        """Last value observed at or before `boundary_us`, or None if none is recent enough."""
        i = int(np.searchsorted(self.window_end_us, boundary_us, side="right")) - 1
        if i < 0 or boundary_us - int(self.obs_ts_us[i]) > self.tolerance_us:
            return None
        return float(self.price_usd[i])


def _last_per_window(df: pl.DataFrame, every_us: int) -> pl.DataFrame:
    return (
        df.with_columns(bnd=((pl.col("ts") + (every_us - 1)) // every_us) * every_us)
        .sort("ts", maintain_order=True)
        .group_by("bnd")
        .agg(pl.col("ts").last(), pl.col("price").last())
    )


def _add(counter: dict[str, int], key: str, n: int) -> None:
    if n:
        counter[key] = counter.get(key, 0) + n


# --------------------------------------------------------------------------- state machine


def _us_to_datetime(us: int) -> datetime:
    return _EPOCH + timedelta(microseconds=us)


def _last_per_key(df: pl.DataFrame, keys: list[str]) -> pl.DataFrame:
    """Per key, the row with the greatest `ts` (ties: the later row)."""
    return df.sort("ts", maintain_order=True).unique(subset=keys, keep="last")


class _Importer:
    """Carries instrument state across batches and writes snapshots at boundaries."""

    def __init__(
        self,
        *,
        underlying: str,
        every_us: int,
        reorder_us: int,
        data_root: Path,
        index: _IndexSeries | None,
        index_fallback: IndexFallback,
        snapshots_per_file: int,
        skipped: dict[str, int],
    ) -> None:
        self.underlying = underlying
        self.every_us = every_us
        self.reorder_us = reorder_us
        self.data_root = data_root
        self.index = index
        self.index_fallback = index_fallback
        self.file_span_us = every_us * snapshots_per_file
        self.skipped = skipped
        empty = pl.DataFrame(schema=_STATE_SCHEMA)
        self.state = empty  # last row per instrument as of `last_boundary`
        self.pending = empty  # last row per (window, instrument) for windows after it
        self.next_boundary: int | None = None
        self.last_boundary: int | None = None
        self.max_ts: int | None = None
        self.rows_parsed = 0
        self.snapshots_written = 0
        self.snapshots_without_index = 0
        self.intervals_without_data = 0
        self.instruments: set[str] = set()
        self.first_snapshot: int | None = None
        self.last_snapshot: int | None = None
        self.files: list[Path] = []
        self.buffer: list[pl.DataFrame] = []
        self.buffer_key: tuple[str, int] | None = None
        self.buffer_first: int | None = None

    # -- input
    def feed(self, df: pl.DataFrame) -> None:
        if self.last_boundary is not None and df.height:
            late = df.get_column("ts") <= self.last_boundary
            _add(self.skipped, "out_of_order", int(late.sum()))
            df = df.filter(~late)
        if df.height == 0:
            return
        ts = df.get_column("ts")
        lo, hi = int(ts.min()), int(ts.max())  # type: ignore[arg-type]
        if self.next_boundary is None:
            self.next_boundary = (lo // self.every_us + 1) * self.every_us
        self.max_ts = hi if self.max_ts is None else max(self.max_ts, hi)
        self.pending = _last_per_key(pl.concat([self.pending, df]), ["bnd", "instrument_name"])
        self._emit_until(self.max_ts - self.reorder_us)

    def finish(self) -> None:
        if self.max_ts is not None:
            self._emit_until(self.max_ts)
        self._flush()

    # -- boundaries
    def _emit_until(self, limit_us: int) -> None:
        every = self.every_us
        while self.next_boundary is not None and self.next_boundary <= limit_us:
            boundary = self.next_boundary
            bnd = self.pending.get_column("bnd")
            due_mask = bnd <= boundary
            if not due_mask.any():
                # No row in (boundary - every, boundary]: skip to the next window with data
                # (or past the limit) instead of repeating a stale chain.
                last_allowed = (limit_us // every) * every
                target = int(bnd.min()) if self.pending.height else last_allowed + every  # type: ignore[arg-type]
                target = min(target, last_allowed + every)
                self.intervals_without_data += (target - boundary) // every
                self.last_boundary = target - every
                self.next_boundary = target
                continue
            due = self.pending.filter(due_mask)
            self.pending = self.pending.filter(~due_mask)
            self.state = _last_per_key(pl.concat([self.state, due]), ["instrument_name"]).filter(
                pl.col("expiry_us") > boundary
            )
            self.last_boundary = boundary
            self.next_boundary = boundary + every
            self._snapshot(boundary)

    def _snapshot(self, boundary_us: int) -> None:
        snap = self.state.filter(pl.col("mark_price") > 0).sort("instrument_name")
        if snap.height == 0:
            self.intervals_without_data += 1
            return
        index_price = self._index_price(boundary_us, snap)
        if index_price is None:
            self.snapshots_without_index += 1
        frame = snap.select(
            snapshot_ts=pl.lit(_us_to_datetime(boundary_us)),
            instrument_name=pl.col("instrument_name"),
            expiry_ts=pl.from_epoch("expiry_us", time_unit="us").dt.replace_time_zone("UTC"),
            strike=pl.col("strike"),
            option_type=pl.col("option_type"),
            mark_price=pl.col("mark_price"),
            mark_iv=pl.col("mark_iv"),
            underlying_price=pl.col("underlying_price"),
            index_price=pl.lit(index_price, pl.Float64),
            bid_price=pl.col("bid_price"),
            ask_price=pl.col("ask_price"),
            bid_iv=pl.col("bid_iv"),
            ask_iv=pl.col("ask_iv"),
            open_interest=pl.col("open_interest"),
            volume=pl.lit(None, pl.Float64),
            interest_rate=pl.lit(None, pl.Float64),
            delta=pl.col("delta"),
            gamma=pl.col("gamma"),
            vega=pl.col("vega"),
            theta=pl.col("theta"),
        ).select(pl.col(name).cast(dtype) for name, dtype in HARVEST_SCHEMA.items())
        key = (f"{_us_to_datetime(boundary_us):%Y-%m-%d}", boundary_us // self.file_span_us)
        if key != self.buffer_key:
            self._flush()
            self.buffer_key, self.buffer_first = key, boundary_us
        self.buffer.append(frame)
        self.snapshots_written += 1
        self.instruments.update(snap.get_column("instrument_name").to_list())
        if self.first_snapshot is None:
            self.first_snapshot = boundary_us
        self.last_snapshot = boundary_us

    def _index_price(self, boundary_us: int, snap: pl.DataFrame) -> float | None:
        if self.index is not None:
            return self.index.at(boundary_us)
        if self.index_fallback == "none":
            return None
        nearest = snap.filter(pl.col("expiry_us") == pl.col("expiry_us").min())
        value = nearest.select(
            pl.col("underlying_price").sort_by("ts", maintain_order=True).last()
        ).item()
        return float(value)

    def _flush(self) -> None:
        if not self.buffer or self.buffer_first is None:
            return
        path = snapshot_path(
            self.data_root, self.underlying, _us_to_datetime(self.buffer_first), stem="tardis"
        )
        atomic_write_parquet(pl.concat(self.buffer), path)
        self.files.append(path)
        self.buffer, self.buffer_key, self.buffer_first = [], None, None

    # -- output
    def result(self, skipped: dict[str, int], *, rows_read: int) -> TardisImportResult:
        source: IndexSource = "index_file" if self.index is not None else self.index_fallback
        return TardisImportResult(
            rows_read=rows_read,
            snapshots_written=self.snapshots_written,
            files_written=len(self.files),
            instruments=len(self.instruments),
            skipped=dict(sorted(skipped.items())),
            first_snapshot=None
            if self.first_snapshot is None
            else _us_to_datetime(self.first_snapshot),
            last_snapshot=None
            if self.last_snapshot is None
            else _us_to_datetime(self.last_snapshot),
            data_root=self.data_root,
            index_source=source,
            snapshots_without_index=self.snapshots_without_index,
            intervals_without_data=self.intervals_without_data,
            files=tuple(self.files),
        )


def _progress_line(importer: _Importer, skipped: dict[str, int], started: float) -> str:
    elapsed = max(time.perf_counter() - started, 1e-9)
    n_skipped = sum(skipped.values())
    return (
        f"tardis: {importer.rows_parsed:,} rows read ({importer.rows_parsed / elapsed:,.0f}/s), "
        f"{n_skipped:,} skipped, {importer.snapshots_written:,} snapshots written"
    )

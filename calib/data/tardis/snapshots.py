"""The snapshot state machine: carries instrument state across batches, writes one snapshot per boundary."""

from __future__ import annotations

from pathlib import Path

import polars as pl

from calib.data.layout import atomic_write_parquet, snapshot_path
from calib.data.schema import HARVEST_SCHEMA
from calib.data.tardis.common import (
    STATE_SCHEMA,
    IndexFallback,
    IndexSource,
    add_count,
    us_to_datetime,
)
from calib.data.tardis.index_series import IndexSeries
from calib.data.tardis.result import TardisImportResult


def _last_per_key(df: pl.DataFrame, keys: list[str]) -> pl.DataFrame:
    """Per key, the row with the greatest `ts` (ties: the later row)."""
    return df.sort("ts", maintain_order=True).unique(subset=keys, keep="last")


class SnapshotWriter:
    """Carries instrument state across batches and writes snapshots at boundaries."""

    def __init__(
        self,
        *,
        underlying: str,
        every_us: int,
        reorder_us: int,
        data_root: Path,
        index: IndexSeries | None,
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
        empty = pl.DataFrame(schema=STATE_SCHEMA)
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
            add_count(self.skipped, "out_of_order", int(late.sum()))
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
            snapshot_ts=pl.lit(us_to_datetime(boundary_us)),
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
        key = (f"{us_to_datetime(boundary_us):%Y-%m-%d}", boundary_us // self.file_span_us)
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
            self.data_root, self.underlying, us_to_datetime(self.buffer_first), stem="tardis"
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
            else us_to_datetime(self.first_snapshot),
            last_snapshot=None
            if self.last_snapshot is None
            else us_to_datetime(self.last_snapshot),
            data_root=self.data_root,
            index_source=source,
            snapshots_without_index=self.snapshots_without_index,
            intervals_without_data=self.intervals_without_data,
            files=tuple(self.files),
        )

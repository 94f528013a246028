"""The benchmark's tables and its text report (what `python -m calib.bench` prints without --json)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

from calib.bench.common import STAGES, BenchRow, ImpliedVolRow, PeerRow, SmallFilesRow
from calib.bench.targets import StartupRow, TargetRow, format_targets


def _fmt_s(v: float | None) -> str:
    return "-" if v is None else f"{v:.3f}"


def format_table(rows: Sequence[BenchRow]) -> str:
    """The benchmark table: one line per size, seconds per stage."""
    head = ["size", "layout", "rows scanned", "rows used", "path", *(n for n, _ in STAGES), "store", "calib s",
            "rows/s", "peak RSS MB", "CLI e2e s"]
    body = [[r.size, r.layout, f"{r.rows_scanned:,}", f"{r.rows_used:,}", r.engine_path,
             *(_fmt_s(r.stages_s.get(n)) for n, _ in STAGES), _fmt_s(r.stages_s.get("store")),
             _fmt_s(r.calib_s), f"{r.rows_per_s / 1e6:.2f}M", f"{r.peak_rss_mb:.0f}", _fmt_s(r.cli_s)]
            for r in rows]
    widths = [max(len(h), *(len(b[i]) for b in body)) for i, h in enumerate(head)]
    lines = ["  ".join(h.rjust(w) for h, w in zip(head, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(c.rjust(w) for c, w in zip(b, widths, strict=True)) for b in body]
    return "\n".join(lines)


def format_peers(rows: Sequence[PeerRow]) -> str:
    """The peer table: per layout, calib end to end, the floor and the DuckDB peer with the ratios."""
    head = ["layout", "window", "rows", "calib e2e s", "RSS MB", "floor s", "calib/floor", "DuckDB peer s",
            "RSS MB", "DuckDB/calib"]
    body = [[r.layout, r.size, f"{r.rows_scanned:,}", f"{r.calib_e2e_s:.3f}", f"{r.calib_rss_mb:.0f}",
             f"{r.floor_s:.3f}", f"{r.calib_over_floor:.2f}x", f"{r.duckdb_s:.3f}", f"{r.duckdb_rss_mb:.0f}",
             f"{r.duckdb_over_calib:.2f}x"] for r in rows]
    widths = [max(len(h), *(len(b[i]) for b in body)) for i, h in enumerate(head)]
    lines = ["  ".join(h.rjust(w) for h, w in zip(head, widths, strict=True)),
             "  ".join("-" * w for w in widths)]
    lines += ["  ".join(c.rjust(w) for c, w in zip(b, widths, strict=True)) for b in body]
    if rows:
        la = rows[0].load_avg
        lines.append(f"times: medians of {rows[0].rounds} interleaved rounds, RSS: the highest; fresh processes; load average "
                     f"{la[0]:.1f} / {la[1]:.1f} / {la[2]:.1f} (1/5/15 min) at the end")
    return "\n".join(lines)


def report_text(rows: Sequence[BenchRow], peers: Sequence[PeerRow], small: SmallFilesRow | None,
                ivr: ImpliedVolRow | None, *, header: str, targets: Sequence[TargetRow] = ()) -> str:
    """The whole text report: `header`, the size table, then the peers, targets, small-files and implied-vol
    lines run."""
    lines = [header, format_table(rows)]
    if peers:
        lines.append(f"\npeers on the {peers[0].size} window (end to end, each a fresh process; floor = python + import "
                     "polars + read and filter the needed columns; DuckDB peer = SQL + scipy minimize_scalar):")
        lines.append(format_peers(peers))
    if targets:
        window = f"; peers ran on the {peers[0].size} window" if peers and peers[0].size != "14d" else ""
        lines.append(f"\ntargets (issue 15, set on the 14-day window{window}), judged from the figures of this run:")
        lines.append(format_targets(targets))
    if small:
        lines.append(f"\nsmall files: 1 day, {small.rows:,} rows: {small.files_snapshot} snapshot files "
                     f"{small.scan_snapshot_s:.3f} s vs {small.files_compact} compacted file "
                     f"{small.scan_compact_s:.3f} s -> ratio {small.ratio:.2f}x")
    if ivr:
        lines.append(f"implied vol: {ivr.quotes:,} quotes in {ivr.seconds:.3f} s = {ivr.quotes_per_s / 1e6:.2f}M "
                     f"quotes/s; time value above the tick: {ivr.extra['quotes_above_tick']:,} quotes, max |IV - true "
                     f"IV| {ivr.max_abs_err_vol:.2e} ({ivr.extra['quotes_err_above_1e-8']} above 1e-8), "
                     f"NaN {ivr.nan_above_tick}; NaN overall {ivr.nan_total} (price above the tick but no time "
                     f"value: {ivr.extra['nan_price_above_tick']})")
    return "\n".join(lines)


def report_json(rows: Sequence[BenchRow], peers: Sequence[PeerRow], small: SmallFilesRow | None,
                ivr: ImpliedVolRow | None, *, targets: Sequence[TargetRow] = (),
                startup: StartupRow | None = None) -> dict[str, Any]:
    """The --json document: rows, peers (with their ratios), targets (with held: true / false / null for not
    run), startup, small_files and implied_vol (null when skipped)."""
    return {"rows": [asdict(r) for r in rows],
            "peers": [{**asdict(p), "calib_over_floor": p.calib_over_floor,
                       "duckdb_over_calib": p.duckdb_over_calib} for p in peers],
            "targets": [{**asdict(t), "held": t.held, "verdict": t.verdict} for t in targets],
            "startup": asdict(startup) if startup else None,
            "small_files": asdict(small) if small else None,
            "implied_vol": asdict(ivr) if ivr else None}

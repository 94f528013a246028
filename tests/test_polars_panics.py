"""A damaged Parquet file that makes polars panic (a Rust `unwrap` on bad bytes) is a bad file, not a crash.

polars raises `PanicException`, which is a `BaseException`: the reader's
"report the file and keep going" handlers, written for `Exception`, let it
through and the run ended in a Rust backtrace. A damaged footer must be a
skipped file at listing. (Damaged data pages can make polars panic or abort
the process outright; an abort cannot be caught in-process, so pages are not
covered here.)
"""

from __future__ import annotations

import struct
from pathlib import Path

import polars as pl

from calib.data.footer import read_footer


def _flips(data: bytes, lo: int, hi: int) -> list[bytes]:
    out = []
    for i in range(lo, hi):
        for x in (0x01, 0xFF):
            c = bytearray(data)
            c[i] ^= x
            out.append(bytes(c))
    return out


def test_every_one_byte_damage_of_a_footer_raises_an_ordinary_error(tmp_path: Path) -> None:
    path = tmp_path / "f.parquet"
    pl.DataFrame({"a": [1, 2, 3] * 100, "s": ["x", "y", "z"] * 100}).write_parquet(path, row_group_size=100)
    data = path.read_bytes()
    (length,) = struct.unpack("<I", data[-8:-4])
    panics = errors = 0
    for damaged in _flips(data, len(data) - 8 - length, len(data) - 8):
        path.write_bytes(damaged)
        try:
            read_footer(path)
        except Exception:
            errors += 1
        except BaseException:
            panics += 1
    assert panics == 0
    assert errors > 0  # the damage was seen, not ignored


def test_a_footer_that_makes_polars_panic_is_a_skipped_file(tmp_path: Path) -> None:
    from calib.data.reader import find_harvest_files

    day = tmp_path / "BTC" / "date=2025-06-29"
    day.mkdir(parents=True)
    good = day / "a.parquet"
    pl.DataFrame({"snapshot_ts": [1], "instrument_name": ["BTC-27JUN25-100000-C"]}).write_parquet(good)
    bad = day / "b.parquet"
    pl.DataFrame({"a": [1, 2, 3] * 100, "s": ["x", "y", "z"] * 100}).write_parquet(bad, row_group_size=100)
    data = bad.read_bytes()
    (length,) = struct.unpack("<I", data[-8:-4])
    for damaged in _flips(data, len(data) - 8 - length, len(data) - 8):
        bad.write_bytes(damaged)
        try:
            pl.read_parquet_schema(damaged)
            pl.scan_parquet(damaged).select(pl.len()).collect()
        except Exception:
            continue
        except BaseException:
            break  # this one panics polars
    else:
        raise AssertionError("no one-byte damage of the footer makes polars panic: the first test covers it")
    from datetime import UTC, datetime

    hf = find_harvest_files(tmp_path, "BTC", window_start=datetime(2025, 6, 29, tzinfo=UTC),
                            window_end=datetime(2025, 6, 30, tzinfo=UTC))
    assert [s.path for s in hf.skipped] == [str(bad)]
    assert "could not be parsed" in hf.skipped[0].error


def test_an_encrypted_footer_is_named_as_such(tmp_path: Path) -> None:
    """Parquet modular encryption ends a file with "PARE": say that, not "cut short"."""
    path = tmp_path / "enc.parquet"
    pl.DataFrame({"a": [1, 2, 3]}).write_parquet(path)
    data = bytearray(path.read_bytes())
    data[-4:] = b"PARE"
    path.write_bytes(bytes(data))
    try:
        read_footer(path)
    except ValueError as e:
        assert "encrypted" in str(e).replace(str(path), "")  # the test directory is named after the test
    else:
        raise AssertionError("an encrypted footer was read as plain")

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

Modules, in the order a row meets them: `csv_stream` (the gzip CSV read in
bounded blocks), `classify` (raw rows -> typed option rows, the rest counted),
`index_series` (the index price per boundary), `snapshots` (the state machine
writing one snapshot per boundary), `result` (what was read, skipped and
written), `importer` (`import_tardis`, driving them); `common` holds the
column lists, the state schema and unit helpers.
"""

from calib.data.tardis.common import TARDIS_OPTIONS_CHAIN_COLUMNS, IndexFallback, IndexSource
from calib.data.tardis.importer import import_tardis, parse_every
from calib.data.tardis.result import TardisImportResult

__all__ = ["TARDIS_OPTIONS_CHAIN_COLUMNS", "IndexFallback", "IndexSource", "TardisImportResult", "import_tardis",
           "parse_every"]

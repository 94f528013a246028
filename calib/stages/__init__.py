"""The stages of a calibration run that both drivers share (in memory: `calib.calibration`,
chunked: `calib.streaming`), one module each: `rv` (the RV series of a window), `quotes`
(quote preparation: one exclusion reason per row, counted; the usable rows as arrays with
RV and IV), `result` (the graded result); `common` holds the names they share.

Both drivers import these from here and nothing from each other, so there is no import cycle.
Nothing here writes the history store.
"""

from calib.stages.common import Progress
from calib.stages.quotes import QuoteTally, iter_chunk_arrays, mark_iv_mismatches, window_arrays
from calib.stages.result import WindowFacts, build_result, new_run_id, stale_chain_issue
from calib.stages.rv import RvState, rv_lookup

__all__ = ["Progress", "QuoteTally", "RvState", "WindowFacts", "build_result", "iter_chunk_arrays",
           "mark_iv_mismatches", "new_run_id", "rv_lookup", "stale_chain_issue", "window_arrays"]

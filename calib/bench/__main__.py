"""`python -m calib.bench`: the CLI's process settings first (before numpy loads), then `main`."""

import sys

from calib.process import tune_process

tune_process()  # the CLI's allocator settings, so `python -m calib.bench` measures what `calib bench` does

from calib.bench.command import main  # noqa: E402  (after tune_process, by design)

sys.exit(main())

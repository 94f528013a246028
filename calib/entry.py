"""The `calib` console script: process tuning, then the Typer app of `cli.py`.

Allocator and threading settings (`calib.process.tune_process`) belong to a
short command-line run only, and must be set before numpy loads, so they are
made here, before `cli` (and with it numpy) is imported; importing `cli` from
a test, a notebook or the app changes nothing about the process.
"""

from __future__ import annotations


def main() -> None:
    from calib.process import tune_process

    tune_process()
    from cli import main as cli_main

    cli_main()

"""The calib error tree. A bad data set is a recorded `failed` run, not an exception."""

from __future__ import annotations


class CalibError(Exception):
    """Base class for calib errors."""


class InvalidInputError(CalibError, ValueError):
    """Bad argument or malformed configuration."""


class NoDataError(CalibError):
    """Nothing usable was found (missing directory, no files)."""


class StoreError(CalibError):
    """History store unavailable, locked or corrupt."""


class StoreLockedError(StoreError):
    """Another process held the history file's lock for longer than the bounded retry."""


class SourceError(CalibError):
    """The market-data source (Deribit) could not be reached or answered badly."""


class PolicyError(CalibError):
    """The update policy refused an action (e.g. Force-Apply of a failed run)."""


class ConvergenceWarning(UserWarning):
    """An optimizer or root finder stopped early."""

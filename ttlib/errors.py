"""The errors that bad input causes, under one base class a user can catch: :class:`TTLibError`.

Each keeps the built-in base it had before this module existed (``ValueError`` for bad values,
``FileNotFoundError`` / ``OSError`` for files), so ``except ValueError`` code keeps working.
Messages are one line that names the option or file, the value, and what is allowed. Anything
else that escapes the library (``RuntimeError``, ``KeyError``, ...) is a bug, not bad input.
"""

from __future__ import annotations


class TTLibError(Exception):
    """Base of every error that bad input (options, parameters, files) causes in ttlib."""

    def _render_traceback_(self):  # IPython hook: a notebook shows one line, not a traceback
        return [f"{type(self).__name__}: {self}"]


class ConfigError(TTLibError, ValueError):
    """An option, notebook parameter or config field out of range, or a preset that is missing."""


class DatasetError(TTLibError, ValueError):
    """A dataset id or file that cannot be used; the message says why and what to do."""


class CheckpointError(TTLibError, ValueError):
    """A model file that is missing, unreadable, or does not fit the model, data or run."""


class CheckpointNotFoundError(CheckpointError, FileNotFoundError):
    """A model file that does not exist (still a ``FileNotFoundError`` as before)."""


class OriginalCheckpointError(CheckpointError):
    """A run directory or file of the original code that cannot be imported, and why."""


class PlanningMemoryError(TTLibError, ValueError):
    """Planner settings whose estimated memory is above the limit."""


class OutputError(TTLibError, OSError):
    """An output location that cannot be written (a file where a folder is needed, read-only)."""


def summary(err: BaseException) -> str:
    """``Type: first line`` of an exception (library errors can run to many lines)."""
    first = (str(err).strip().splitlines() or [""])[0]
    return f"{type(err).__name__}: {first}" if first else type(err).__name__


# ------------------------------------------------------------ range checks for config fields
def is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_positive(where: str, **values) -> None:
    """ConfigError naming ``where`` (``TrainConfig``) unless every value (None skipped) is an
    integer >= 1."""
    for name, value in values.items():
        if value is not None and not (is_int(value) and value >= 1):
            raise ConfigError(f"{where} {name}={value!r}: must be an integer >= 1")


def check_number(where: str, interval: str, ok, **values) -> None:
    """ConfigError unless every value is a number (not a bool) with ``ok(value)`` (NaN never)."""
    for name, value in values.items():
        if isinstance(value, bool) or not isinstance(value, int | float) or not ok(value):
            raise ConfigError(f"{where} {name}={value!r}: must be a number in {interval}")

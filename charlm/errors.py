"""Errors a user can act on. The CLI prints their message as one line and exits with `exit_code`."""

import math


class CharlmError(Exception):
    """Base class: a problem charlm can explain in one line."""

    exit_code = 1


class UsageError(CharlmError):
    """Bad input: a config, a flag, a file or a prefix the user can fix (exit code 2)."""

    exit_code = 2


class ConfigError(UsageError):
    """An invalid configuration file, key or value."""


class CorpusError(UsageError):
    """A corpus that cannot be read or is unusable for the requested run."""


class CheckpointError(UsageError):
    """A run folder or checkpoint that is missing, unreadable or unsafe."""


class RunError(CharlmError):
    """A failure while running (download, disk, numerical fault): exit code 1."""


class Diverged(RunError):
    """Training met a NaN/Inf loss or gradient norm (train.on_nonfinite): a search drops that candidate."""


def finite(value: float, name: str, error: type[CharlmError] = UsageError) -> float:
    """`value` when it is a finite number: no setting or flag of charlm has a meaning for infinity or NaN
    (a limit that can be off says so with 0 or null), so every float a user gives goes through here."""
    if not math.isfinite(value):
        raise error(f"{name} must be a finite number, got {value}")
    return value


def shown(value: object, limit: int = 80) -> str:
    """`value` as an error message quotes it: its repr, cut to `limit` characters."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[: limit - 3]}..."

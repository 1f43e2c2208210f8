"""The errors diffisp raises on purpose.

Every check on user input raises a subclass of :class:`DiffispError`, so a caller (or the CLI)
can tell "you gave me something wrong" from a bug. The subclasses also derive from the matching
built-in (``ValueError``/``TypeError``) so ordinary ``except ValueError`` code keeps working.
"""

from __future__ import annotations


class DiffispError(Exception):
    """Base class of every error diffisp raises deliberately."""


class InputError(DiffispError, ValueError):
    """An array, file or argument has the wrong shape, range or content."""


class InputTypeError(DiffispError, TypeError):
    """An argument has the wrong type or dtype."""


class ConfigError(InputError):
    """A configuration value is unknown or out of its allowed range."""


class DataError(InputError):
    """A data set or file is empty, corrupt, truncated or fails its checksum."""


class CheckpointError(InputError):
    """A checkpoint is missing, unreadable or was written for a different model layout."""


class OutputError(DiffispError, OSError):
    """A file or directory could not be written (a full disk, a read-only or vanished folder).

    The message names the path and what was kept (in a training run: the last intact
    checkpoint, to resume from); ``errno`` is the operating system's code when one is known.
    """

    def __init__(self, message: str, errno: int | None = None) -> None:
        super().__init__(message)
        self.errno = errno


class TrainingDivergedError(DiffispError, FloatingPointError):
    """The loss or the parameters became NaN/Inf; training stopped before writing them."""


__all__ = [
    "CheckpointError",
    "ConfigError",
    "DataError",
    "DiffispError",
    "InputError",
    "InputTypeError",
    "OutputError",
    "TrainingDivergedError",
]

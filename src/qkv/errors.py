"""Errors that qkv raises on purpose.

Every error says what was wrong and what to do about it. The CLI prints the message on one line
and exits with a non-zero status; library users can catch :class:`QkvError`.
"""


class QkvError(Exception):
    """Base class of every error qkv raises deliberately."""


class ConfigError(QkvError, ValueError):
    """A configuration value is missing, unknown or out of range."""


class ShapeError(QkvError, ValueError):
    """A tensor has the wrong shape or dtype for the operation."""


class DataError(QkvError, ValueError):
    """An input file or text cannot be used (missing, empty, misaligned, not UTF-8...)."""


class CheckpointError(QkvError):
    """A run directory or checkpoint is missing, corrupted or does not fit the model."""


class OutputError(QkvError, OSError):
    """A file or directory cannot be written (it is a directory, a parent is a file, no permission...)."""


class TrainingError(QkvError):
    """Training cannot go on (e.g. the loss became NaN or infinite); the last good checkpoint is kept."""


class QkvWarning(UserWarning):
    """What the `qkv` command prints as `warning: ...` (input cut to the model's length, unknown
    tokens, an untrained model, training lines skipped), raised through Python's `warnings` module."""

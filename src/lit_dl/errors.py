"""User-facing errors.

Anything raised as a :class:`LitDLError` is printed by the CLI as a single line
(``error: ...``) and ends the process with exit code 2, without a traceback.
Messages say what is wrong *and* how to fix it.
"""


class LitDLError(Exception):
    """Base class of errors caused by the user's input rather than by a bug."""


class ConfigError(LitDLError):
    """A config value is missing, unknown or of the wrong kind."""


class DataError(LitDLError):
    """A data file is missing, empty, unreadable, or lacks what the config asks for."""


class CheckpointError(LitDLError):
    """A checkpoint is missing, corrupted or was not written by lit_dl."""


class TrainingError(LitDLError):
    """Training cannot go on (for example the loss became NaN)."""

"""User-facing errors. Each says what went wrong and what to do; the CLI prints them without a traceback."""


class MagicPortraitError(Exception):
    """Base class of errors caused by the user's input or set-up (the CLI exits with status 2)."""


class InputError(MagicPortraitError):
    """An input file is missing, unreadable, empty or unusable."""


class NoFaceError(MagicPortraitError):
    """No usable face was found."""


class DependencyError(MagicPortraitError):
    """An optional dependency is missing."""


class OutputError(MagicPortraitError):
    """An output path cannot be written."""


class CheckpointError(InputError):
    """Model weights are missing, unreadable, or do not match the model (missing / unexpected / mis-shaped keys)."""

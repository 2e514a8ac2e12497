"""Errors meant for people: the command line prints them as one line, without a traceback."""


class MAECourseError(Exception):
    """Base class of every error the course raises about its user's input or environment.

    Raised in a DataLoader worker, such an error reaches the main process re-created with the
    worker's whole traceback as its message; it keeps only the original one-line message.
    """

    def __init__(self, *args: object):
        if len(args) == 1 and isinstance(args[0], str) and args[0].startswith("Caught ") and "Traceback" in args[0]:
            last = args[0].rstrip().splitlines()[-1]
            args = (last.split(": ", 1)[1] if ": " in last else last,)
        super().__init__(*args)


class ConfigError(MAECourseError, ValueError):
    """A bad setting: a value out of range, a size that does not fit, an unknown name."""


class CheckpointError(MAECourseError, ValueError):
    """A file that is not a usable checkpoint, or one whose keys or shapes do not fit the model."""


class DataError(MAECourseError, ValueError):
    """Missing, unreadable or malformed data."""


class NonFiniteLossError(MAECourseError, FloatingPointError):
    """Training produced a NaN or infinite loss."""

"""Errors meant for people: the command line prints them as one line, without a traceback."""


class MAECourseError(Exception):
    """Base class of every error the course raises about its user's input or environment."""


class ConfigError(MAECourseError, ValueError):
    """A bad setting: a value out of range, a size that does not fit, an unknown name."""


class CheckpointError(MAECourseError, ValueError):
    """A file that is not a usable checkpoint, or one whose keys or shapes do not fit the model."""


class DataError(MAECourseError, ValueError):
    """Missing, unreadable or malformed data."""


class NonFiniteLossError(MAECourseError, FloatingPointError):
    """Training produced a NaN or infinite loss."""

"""The two errors a user of mimsdk catches: a recipe that is wrong, and data that cannot be used.

Both are ``ValueError``s whose message names the dotted recipe key, or the file or folder, and what was expected.
"""

from __future__ import annotations


class ConfigError(ValueError):
    """A recipe key or value that is not allowed; the message names the key."""


class DataError(ValueError):
    """Unusable input data; the message names the file or folder and what was expected."""


class DivergedError(RuntimeError):
    """Training produced a non-finite loss, gradient or weight; the message names the step and what to try."""

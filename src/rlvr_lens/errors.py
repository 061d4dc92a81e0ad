"""User-facing errors.

A :class:`UserError` carries one sentence that tells the user what is wrong with their
input (a missing path, a mismatched pair, a malformed data file). The CLI prints it and
exits with status 2, without a traceback. Bugs stay ordinary exceptions.
"""

from __future__ import annotations


class UserError(Exception):
    """An error caused by the user's input, reported as one sentence (CLI exit status 2)."""

    exit_code = 2

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message

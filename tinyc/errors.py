"""The one exception type users see.

Every error a user can cause (bad file, unsupported op, wrong data) is raised as a
TinycError with a one-line message that names the file / node / op and says what to
do. The CLI prints it on stderr and exits with status 2; anything else is a bug.
"""


class TinycError(Exception):
    """A user-facing error: one line, actionable, exit status 2."""

    exit_code = 2


class UnsupportedError(TinycError):
    """The model uses an op, attribute or type that tinyc does not handle."""


class DoesNotFit(TinycError):
    """The model needs more flash or RAM than the board has."""

"""The one exception type that means "the user asked for something we cannot do".

Every entry point turns a `UserError` into one line on stderr and exit code 2; anything else is a
bug and keeps its traceback (shown with `--debug`).
"""


class UserError(Exception):
    """A mistake in the user's input: the message names the problem and the way out."""

"""The one exception type for problems a user can fix (bad input, missing files, bad specs)."""


class SteerableError(Exception):
    """A user-fixable problem. The message names the field, row, spec or file, and the fix.

    The CLI prints these as one line without a traceback and exits with status 2.
    """


def first_line(err: BaseException) -> str:
    """The first line of an exception's message (its type name when it has none): for
    wrapping a library's error in one line of ours."""
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__

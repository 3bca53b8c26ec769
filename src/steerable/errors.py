"""The one exception type for problems a user can fix (bad input, missing files, bad specs)."""


class SteerableError(Exception):
    """A user-fixable problem. The message names the field, row, spec or file, and the fix.

    The CLI prints these as one line without a traceback and exits with status 2.
    """

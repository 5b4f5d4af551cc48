"""The one exception type users see: a single line that says what is wrong and how to fix it."""


class TunesmithError(Exception):
    """A problem with the user's input or environment, reported as one line without a traceback."""

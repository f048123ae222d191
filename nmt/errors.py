"""One exception type for everything a user can fix: bad data, bad recipes, missing files.

The CLI prints its message (what, where, what to do) without a traceback; anything else is a bug
and keeps its traceback.
"""


class NMTError(Exception):
    """An error in the user's input or environment, with a message meant for the user."""

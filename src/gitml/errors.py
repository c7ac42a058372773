"""The one error type for problems a user can cause: bad data, bad config, bad request."""


class GitmlError(Exception):
    """A problem in the user's data or configuration.

    The message names what is wrong (file, column, row count or field) and what to do about it.
    The command line prints it without a traceback and exits non-zero.
    """

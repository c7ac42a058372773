"""The one error type for problems a user can cause: bad data, bad config, bad request."""


class GitmlError(Exception):
    """A problem in the user's data or configuration.

    The message names what is wrong (file, column, row count or field) and what to do about it.
    The command line prints it without a traceback and exits non-zero.
    """


class ExitStatus(Exception):  # noqa: N818  (an outcome, not an error)
    """A command's result that is not success: its report (printed to stdout) and its exit status.

    `gitml gate --check` exits 1 on a failed verdict; `gitml drift` exits 1 when it finds drift.
    """

    def __init__(self, text: str, status: int) -> None:
        super().__init__(text)
        self.text = text
        self.status = status


class UnusableInputError(GitmlError):
    """Input a check cannot judge (no data in the window, columns missing): exit status 2, not 1."""

    status = 2

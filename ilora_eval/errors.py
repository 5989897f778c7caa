"""One exception type for every user-facing error, so the CLIs can print it on one line."""


class IloraError(Exception):
    """Bad input or configuration: the message names the problem and the fix."""

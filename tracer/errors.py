"""Errors meant for the user: the CLI prints them as one line, no traceback."""


class TracerError(Exception):
    """A problem the user can act on (bad input, missing capability, ...)."""

    exit_code = 2


class NotRootError(TracerError):
    def __init__(self, what: str = "this command") -> None:
        super().__init__(f"{what} needs root (BPF and network namespaces); run it with sudo")


class MissingCapability(TracerError):
    exit_code = 1

"""Errors meant for the user: the CLI prints them as one line, no traceback."""


class TracerError(Exception):
    """A problem the user can act on (bad input, missing capability, ...)."""

    exit_code = 2


class NotRootError(TracerError):
    def __init__(self, what: str = "this command") -> None:
        super().__init__(f"{what} needs root (BPF and network namespaces); run it with sudo")


def one_line(text: str, limit: int | None = None) -> str:
    """Whitespace (newlines included) collapsed: errors print as one line."""
    flat = " ".join(str(text).split())
    return flat[:limit] if limit else flat


def require_root(what: str) -> None:
    """Raise NotRootError unless running as root."""
    import os

    if os.geteuid() != 0:
        raise NotRootError(what)


class MissingCapability(TracerError):
    exit_code = 1

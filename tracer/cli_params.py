"""Option types and defaults shared by the CLI commands, so every command
takes (and refuses) a port, an address, a protocol or an id the same way:
bad input is one line on stderr and a non-zero exit (click's usage error)."""

from __future__ import annotations

import math
import os

import click

from tracer.addresses import host_text
from tracer.errors import TracerError

PORT = click.IntRange(1, 65535)
PROTOCOL = click.Choice(["tcp", "udp", "icmp", "icmp6"], case_sensitive=False)


class HostType(click.ParamType):
    """An IPv4 or IPv6 address, as captures and journeys spell it (strict:
    `1.2.3`, a host name or a prefix are refused, rather than silently
    matching nothing; `fd00:0::1` becomes `fd00::1`)."""

    name = "ADDRESS"

    def convert(self, value, param, ctx):
        try:
            return host_text(str(value).strip())
        except TracerError:
            self.fail(f"{value!r} is not an IPv4 or IPv6 address (e.g. 198.18.0.2, fd00:198:18::2)", param, ctx)


HOST = HostType()


class Seconds(click.ParamType):
    """A duration in seconds: finite, above ``minimum`` (NaN and inf would
    run forever or fail deep inside; ten years is more than anyone means)."""

    name = "SECONDS"
    MAXIMUM = 10 * 365 * 86400.0

    def __init__(self, minimum: float = 0.0, inclusive: bool = False) -> None:
        self.minimum, self.inclusive = minimum, inclusive

    def convert(self, value, param, ctx):
        try:
            seconds = float(value)
        except (TypeError, ValueError):
            self.fail(f"{value!r} is not a number of seconds", param, ctx)
        if not math.isfinite(seconds) or seconds > self.MAXIMUM:
            self.fail(f"{value!r} is not a usable number of seconds (finite, at most {self.MAXIMUM:.0f})", param, ctx)
        if seconds < self.minimum or (seconds == self.minimum and not self.inclusive):
            bound = ">=" if self.inclusive else ">"
            self.fail(f"{value!r} must be {bound} {self.minimum:g} seconds", param, ctx)
        return seconds


SECONDS = Seconds()


def use_color(flag: bool | None, stream) -> bool:
    """--color/--no-color when given; else off when NO_COLOR is set to
    anything (https://no-color.org), else when ``stream`` is a terminal."""
    if flag is not None:
        return flag
    if os.environ.get("NO_COLOR"):
        return False
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def color_option(fn):
    return click.option("--color/--no-color", default=None,
                        help="Colour the output (default: when writing to a terminal and NO_COLOR is not set).")(fn)


def count_option(fn, what: str = "packets"):
    return click.option("-c", "--count", type=click.IntRange(min=1), default=None,
                        help=f"Stop after N {what} (as tcpdump -c).")(fn)


class IdType(click.ParamType):
    """A packet or flow id as every output prints it (hex), or a capture's
    integer: the set of ids it may mean (tracer/ids.py)."""

    name = "ID"

    def convert(self, value, param, ctx):
        if isinstance(value, set):
            return value
        from tracer.ids import parse_id

        try:
            return parse_id(str(value))
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


ID = IdType()

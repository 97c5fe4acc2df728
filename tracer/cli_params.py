"""Option types and defaults shared by the CLI commands, so every command
takes (and refuses) a port, an address, a protocol or an id the same way:
bad input is one line on stderr and a non-zero exit (click's usage error)."""

from __future__ import annotations

import ipaddress
import os

import click

PORT = click.IntRange(1, 65535)
PROTOCOL = click.Choice(["tcp", "udp", "icmp"], case_sensitive=False)


class IPv4Type(click.ParamType):
    """A dotted-quad IPv4 address (strict: `1.2.3` or a host name are refused,
    rather than silently matching nothing)."""

    name = "IPV4"

    def convert(self, value, param, ctx):
        try:
            return str(ipaddress.IPv4Address(str(value).strip()))
        except ValueError:
            self.fail(f"{value!r} is not an IPv4 address (e.g. 198.18.0.2)", param, ctx)


IPV4 = IPv4Type()


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
    """A packet or flow id as trace/show/stats print it (hex), or the JSON's
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

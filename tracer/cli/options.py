"""Option types, defaults and decorators shared by the CLI commands, so
every command takes (and refuses) a port, an address, a protocol or an id
the same way: bad input is one line on stderr and a non-zero exit (click's
usage error). The live commands (trace, record, latency, explain) share
their target options, capture-file options and ``options_from``, which
checks them once (tracer/targets.py) before any kernel work."""

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


def count_option(fn):
    return click.option("-c", "--count", type=click.IntRange(min=1), default=None,
                        help="Stop after N packets (as tcpdump -c).")(fn)


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


# --- shared by the commands that trace live (trace, record, latency, explain) ---


def target_options(fn):
    """Options shared by every command that picks traffic to trace, and the
    pcap-filter expression (tcpdump's: the words after the options)."""
    for decorator in reversed(
        [
            click.argument("expression", nargs=-1, metavar="[EXPRESSION]"),
            click.option("--port", "ports", type=PORT, multiple=True, help="Trace connections with this port (either end, before or after NAT). Repeatable."),
            click.option("--container", "containers", multiple=True, help="Trace a container's traffic (its address and published ports). Repeatable."),
            click.option("--host", "hosts", type=HOST, multiple=True, help="Trace traffic to or from this IPv4 or IPv6 address. Repeatable."),
            click.option("--proto", type=PROTOCOL, default=None, help="Only this protocol."),
            click.option("-i", "--iface", "ifaces", multiple=True, help="Host interface(s) where outside traffic arrives (default: every non-container interface)."),
            click.option("--tc-mode", type=click.Choice(["auto", "tcx", "clsact"]), default="auto", show_default=True, help="How tc programs attach."),
            click.option("--sample", type=click.IntRange(min=1, max=(1 << 32) - 1), default=1, show_default=True, help="Follow 1 in N flows, chosen in the kernel by a hash of the connection (each chosen flow whole)."),
            click.option("--ebpf", is_flag=True, expose_value=False, callback=_remember_ebpf,
                         help="Print the BPF C program these options build, with its clang flags, and exit "
                              "(as bcc's tools do): nothing is loaded or attached."),
            click.option("--compile-only", is_flag=True, expose_value=False, callback=_remember_compile_only,
                         help="Compile the BPF programs these options build into the program cache (the kernel "
                              "verifies them) and exit: nothing is attached; later starts with these options "
                              "skip the compile."),
        ]
    ):
        fn = decorator(fn)
    return fn


def _remember_ebpf(ctx, param, value):
    ctx.meta["tracer.ebpf"] = value


def _remember_compile_only(ctx, param, value):
    ctx.meta["tracer.compile_only"] = value


def options_from(ports, containers, hosts, proto, ifaces, tc_mode, sample=1, expression=(), rules=False,
                 proxy_links=False, hooks="all"):
    from tracer.session import TraceOptions, TraceSession
    from tracer.targets import Targets

    # bad input (an expression libpcap or the translation refuses too) fails before any kernel work
    targets = Targets.from_cli(ports, containers, hosts, proto, sample, expression)
    options = TraceOptions(targets, tuple(ifaces), tc_mode, rules, proxy_links, hooks)
    ctx = click.get_current_context(silent=True)
    if ctx is not None and ctx.meta.get("tracer.ebpf"):  # --ebpf: the program, not a trace
        click.echo(TraceSession(options, latency=ctx.command.name == "latency").ebpf_source(), nl=False)
        ctx.exit(0)
    if ctx is not None and ctx.meta.get("tracer.compile_only"):  # programs into the cache, not a trace
        from tracer.prebuild import prebuild

        for line in prebuild(options, latency=ctx.command.name == "latency"):
            click.echo(f"tracer: {line}", err=True)
        ctx.exit(0)
    return options


def hooks_option(fn):
    """--hooks (trace, record, latency, explain): the hook profile, tracer/sensors/hook_profile.py."""
    from tracer.sensors.hook_profile import DEFAULT, HOOK_PROFILES

    return click.option(
        "--hooks", type=click.Choice(HOOK_PROFILES), default=DEFAULT, show_default=True,
        help="Which hooks to attach to. all: every hop. lean: 5 BPF runs a forwarded packet instead of 9, "
             "without PREROUTING, INPUT and POSTROUTING before NAT, FORWARD and tc on the Docker bridges "
             "(NAT is still named where it happened, journeys end and drop the same; with --iface, PREROUTING "
             "before NAT stays; README: Hook profiles, and Performance for the cost).")(fn)


def rules_option(fn):
    return click.option("--rules", is_flag=True, help="Name the netfilter rules each packet met at each hook (table/chain #N, "
                        "as iptables -S prints the rule): nf_tables tracing of the traced traffic only, through a table of our own.")(fn)


def write_options(fn):
    """Capture file options shared by `trace -w` and `record`."""
    for decorator in reversed(
        [
            click.option("--rotate-size", type=SizeType(), default=None, help="Start a new numbered file (PATH stem.0000.arrows, ...) after this size, e.g. 10M, 1G."),
            click.option("--rotate-seconds", type=SECONDS, default=None, help="Start a new numbered file after S seconds."),
            click.option("-C", "rotate_mb", type=MegabytesType(), default=None, help="tcpdump's -C: --rotate-size in millions of bytes (-C 100), or with a unit (-C 10M)."),
            click.option("-W", "--rotate-files", "rotate_files", type=click.IntRange(min=1), default=None,
                         help="Keep at most N rotated files, removing the oldest as a new one starts (tcpdump's -W ring)."),
        ]
    ):
        fn = decorator(fn)
    return fn


class SizeType(click.ParamType):
    name = "SIZE"

    def convert(self, value, param, ctx):
        if isinstance(value, int):
            return value
        from tracer.capture.writer import parse_size

        try:
            return parse_size(value)
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


class MegabytesType(SizeType):
    """tcpdump's -C: a bare number is millions of bytes; a unit (10M, 1G) is as --rotate-size."""

    name = "MB"

    def convert(self, value, param, ctx):
        if isinstance(value, int):
            return value
        try:
            number = float(str(value))
        except ValueError:
            return super().convert(value, param, ctx)
        if not number > 0:
            self.fail(f"not a size: {value!r} (millions of bytes, as tcpdump -C)", param, ctx)
        return int(number * 1_000_000)


def make_recorder(path, rotate_size, rotate_seconds, stdout_busy: str | None = None, rotate_mb=None, rotate_files=None,
                  count=None, progress=False):
    """A capture recorder for PATH (checked before any kernel work), or None.
    PATH '-' is standard output, unless the command prints there itself
    (``stdout_busy`` says what it prints). ``rotate_mb`` is -C (another way
    to say rotate_size), ``rotate_files`` -W (a ring of that many files);
    ``count``: `record -c`, ``progress``: a progress line each second."""
    if rotate_mb is not None:
        if rotate_size is not None:
            raise click.UsageError("give one of -C and --rotate-size")
        rotate_size = rotate_mb
    if rotate_files is not None and rotate_size is None and rotate_seconds is None:
        raise click.UsageError("-W/--rotate-files needs rotation: -C/--rotate-size or --rotate-seconds")
    if path == "-" and stdout_busy:
        raise click.UsageError(f"-w -: standard output has the {stdout_busy}; use `tracer record -w -` for a capture on a pipe")
    if path is None:
        if rotate_size is not None or rotate_seconds is not None:
            raise click.UsageError("--rotate-size/--rotate-seconds/-C/-W need -w/--write PATH")
        return None
    from tracer.capture.recorder import Recorder

    recorder = Recorder(path, rotate_size=rotate_size, rotate_seconds=rotate_seconds, rotate_files=rotate_files,
                        count=count, progress=progress)
    recorder.check()
    return recorder


proxy_links_option = click.option(
    "--proxy-links/--no-proxy-links", default=True, show_default=True,
    help="Join docker-proxy's two connections (client -> host port, proxy -> container) and show the proxy hop "
         "(a capture keeps the links). Its syscall tracepoints cost every process on the host some time per syscall "
         "(README: Performance).")

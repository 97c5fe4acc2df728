"""The click CLI. Thin: parse options, wire layers together, turn errors into
one line on stderr."""

from __future__ import annotations

import logging
import sys

from tracer import allocator

if allocator.is_live(sys.argv):  # before anything imports pyarrow
    allocator.keep_arrow_memory()

import click

from tracer import __version__
from tracer.errors import TracerError
from tracer.render_commands import ABORTED, error_line, os_error_line
from tracer.text import printable


class TracerGroup(click.Group):
    """Click group whose usage errors and TracerErrors print one line, no traceback."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except BrokenPipeError:  # our reader went away (`tracer show --json FILE | head -1`): not an error
            from tracer.output import quiet_stdout

            quiet_stdout()
            return 0

    def main(self, *args, **kwargs):  # type: ignore[override]
        kwargs["standalone_mode"] = False
        from tracer.stopping import watch_from_start

        watch_from_start()
        try:
            rv = super().main(*args, **kwargs)
        except click.exceptions.Abort:
            click.echo(ABORTED, err=True)
            sys.exit(130)
        except click.ClickException as exc:
            click.echo(error_line(exc.format_message()), err=True)
            sys.exit(exc.exit_code)
        except TracerError as exc:
            if exc.exit_code == 0:  # a reader that closed our pipe: stop quietly (CaptureReaderGone)
                from tracer.output import quiet_stdout

                quiet_stdout()
                sys.exit(0)
            click.echo(error_line(str(exc)), err=True)
            sys.exit(exc.exit_code)
        except KeyboardInterrupt:
            sys.exit(130)
        except OSError as exc:  # an I/O failure nothing above turned into a TracerError (disk full, EIO)
            click.echo(os_error_line(exc), err=True)
            sys.exit(1)
        if _output_failed():  # told on stderr as it happened: the output file is incomplete
            sys.exit(1)
        if isinstance(rv, int):
            sys.exit(rv)
        sys.exit(0)


def _output_failed() -> bool:
    """Whether writing our output file back failed (tracer/written_pages.py,
    imported only by a command whose stdout was a regular file)."""
    pages = sys.modules.get("tracer.written_pages")
    return bool(pages is not None and pages.output_failed())


class _PrintableFormatter(logging.Formatter):
    """Warnings name interfaces and containers: escape what could steer the terminal."""

    def format(self, record: logging.LogRecord) -> str:
        return printable(super().format(record))


@click.group(cls=TracerGroup)
@click.version_option(__version__, prog_name="tracer")
def cli() -> None:
    """Follow real packets through a Docker host: host port, DNAT, docker0,
    veth, container, and back out through reverse NAT or MASQUERADE."""
    logging.basicConfig(level=logging.WARNING)
    for handler in logging.getLogger().handlers:
        handler.setFormatter(_PrintableFormatter("tracer: %(levelname)s: %(message)s"))


def _register() -> None:
    from tracer.cli.doctor import doctor
    from tracer.cli.lab import lab
    from tracer.cli.latency import latency
    from tracer.cli.trace import demo, trace

    for command in (doctor, lab, trace, demo, latency):
        cli.add_command(command)
    from tracer.cli.record import record
    from tracer.cli.show import show

    for command in (record, show):
        cli.add_command(command)
    from tracer.cli.analyze import export, report, stats

    for command in (stats, export, report):
        cli.add_command(command)
    from tracer.cli.sql import sql

    cli.add_command(sql)
    from tracer.cli.explain import explain

    cli.add_command(explain)


_register()


def main() -> None:
    cli.main(prog_name="tracer")

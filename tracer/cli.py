"""The click CLI. Thin: parse options, wire layers together, turn errors into
one line on stderr."""

from __future__ import annotations

import logging
import sys

import click

from tracer import __version__
from tracer.errors import TracerError, one_line


class TracerGroup(click.Group):
    """Click group whose usage errors and TracerErrors print one line, no traceback."""

    def main(self, *args, **kwargs):  # type: ignore[override]
        kwargs["standalone_mode"] = False
        try:
            rv = super().main(*args, **kwargs)
        except click.exceptions.Abort:
            click.echo("tracer: aborted", err=True)
            sys.exit(130)
        except click.ClickException as exc:
            click.echo(f"tracer: error: {one_line(exc.format_message())}", err=True)
            sys.exit(exc.exit_code)
        except TracerError as exc:
            click.echo(f"tracer: error: {one_line(str(exc))}", err=True)
            sys.exit(exc.exit_code)
        except KeyboardInterrupt:
            sys.exit(130)
        if isinstance(rv, int):
            sys.exit(rv)
        sys.exit(0)


@click.group(cls=TracerGroup)
@click.version_option(__version__, prog_name="tracer")
def cli() -> None:
    """Follow real packets through a Docker host: host port, DNAT, docker0,
    veth, container, and back out through reverse NAT or MASQUERADE."""
    logging.basicConfig(format="tracer: %(levelname)s: %(message)s", level=logging.WARNING)


def _register() -> None:
    from tracer.cli_doctor import doctor
    from tracer.cli_lab import lab
    from tracer.cli_latency import latency
    from tracer.cli_trace import demo, trace

    for command in (doctor, lab, trace, demo, latency):
        cli.add_command(command)
    from tracer.cli_capture import record, show

    for command in (record, show):
        cli.add_command(command)
    from tracer.cli_analyze import export, report, stats

    for command in (stats, export, report):
        cli.add_command(command)
    from tracer.cli_sql import sql

    cli.add_command(sql)
    from tracer.cli_explain import explain

    cli.add_command(explain)


_register()


def main() -> None:
    cli.main(prog_name="tracer")

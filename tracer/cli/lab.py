"""`tracer lab`: the offline Docker lab whose packets tracer follows."""

from __future__ import annotations

import json

import click

from tracer.errors import require_root


def _print_json(obj: object) -> None:
    click.echo(json.dumps(obj, indent=2, sort_keys=False))


@click.group()
def lab() -> None:
    """Offline Docker lab: a web container on host port 8000 and a client netns
    (198.18.0.2) whose only route goes to the host (198.18.0.1)."""


@lab.command()
@click.option("--userland-proxy/--no-userland-proxy", "userland_proxy", default=None,
              help="--no-userland-proxy restarts dockerd with --userland-proxy=false (hairpin NAT "
                   "instead of docker-proxy); a plain `lab up` (or --userland-proxy) restarts it with "
                   "its arguments from before. An engine the lab did not switch is left as it is, and one "
                   "tracer's scripts did not start (systemd's) is never restarted. Running containers "
                   "without an always/unless-stopped restart policy stay stopped (named in a warning).")
def up(userland_proxy: bool | None) -> None:
    """Build the image if needed, start the container, client netns and
    server; verify traffic both ways; print the lab as JSON."""
    from tracer import lab as lab_mod

    _print_json(lab_mod.up(userland_proxy))


@lab.command()
def down() -> None:
    """Remove the lab's container, netns, veth and server (keeps the image)."""
    from tracer import lab as lab_mod

    from tracer.render_commands import lab_removed_text

    click.echo(lab_removed_text(lab_mod.down()))


@lab.command()
@click.option("--json", "as_json", is_flag=True, help="print the status as one JSON object")
def status(as_json: bool) -> int:
    """Describe the lab; exit 0 when it is fully up, 1 otherwise."""
    from tracer import lab as lab_mod
    from tracer.render_commands import lab_status_text

    st = lab_mod.status()
    if as_json:
        _print_json(st)
    else:
        click.echo(lab_status_text(st))
    return 0 if st["up"] else 1


@lab.command()
def image() -> None:
    """Build the offline lab image (tracer-lab:latest) unless it is current."""
    from tracer.lab_base import IMAGE
    from tracer.lab_image import ensure_image
    from tracer.render_commands import lab_image_line

    require_root("tracer lab image")
    click.echo(lab_image_line(IMAGE, ensure_image()))

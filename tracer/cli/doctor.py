"""`tracer doctor`: what this machine can do, probed for real."""

from __future__ import annotations

import json
import sys

import click

from tracer.errors import require_root


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print the report as one JSON object.")
def doctor(as_json: bool) -> None:
    """Probe BPF, netfilter/tc attach points, headers and Docker; exit 1 if tracing cannot work."""
    require_root("tracer doctor")
    from tracer.dockerd import probe
    from tracer.kernel.probes import run_probes  # imports bcc lazily, after the root check
    from tracer.native import capability as native_capability
    from tracer.render_commands import doctor_missing_line, doctor_text

    from tracer.sensors.all import needed, readiness

    report = run_probes(probe_docker=probe)
    report.capabilities.append(native_capability())
    for cap in report.capabilities:  # what the sensors need is theirs to say
        required = needed(cap.name)
        if required is not None:
            cap.required = required
    sensors = readiness({c.name: c.ok for c in report.capabilities})
    if as_json:
        click.echo(json.dumps({**report.to_dict(), "sensors": sensors}, indent=2))
    else:
        click.echo(doctor_text(report.capabilities, sensors))
    if not report.ok:
        for cap in report.missing_required:
            click.echo(doctor_missing_line(cap), err=True)
        sys.exit(1)

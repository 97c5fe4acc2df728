"""`tracer doctor`: what this machine can do, probed for real."""

from __future__ import annotations

import json
import sys

import click

from tracer.errors import require_root


def _table(rows: list[tuple[str, str, str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(2)]
    return "\n".join(f"{a:<{widths[0]}}  {b:<{widths[1]}}  {c}".rstrip() for a, b, c in rows)


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print the report as one JSON object.")
def doctor(as_json: bool) -> None:
    """Probe BPF, netfilter/tc attach points, headers and Docker; exit 1 if tracing cannot work."""
    require_root("tracer doctor")
    from tracer.dockerd import probe
    from tracer.kernel.probes import run_probes  # imports bcc lazily, after the root check

    from tracer.sensors.all import needed, readiness

    report = run_probes(probe_docker=probe)
    for cap in report.capabilities:  # what the sensors need is theirs to say
        required = needed(cap.name)
        if required is not None:
            cap.required = required
    sensors = readiness({c.name: c.ok for c in report.capabilities})
    if as_json:
        click.echo(json.dumps({**report.to_dict(), "sensors": sensors}, indent=2))
    else:
        rows = [("capability", "status", "detail")]
        rows += [(c.name, c.status + ("" if c.required or c.ok else " (optional)"), c.detail) for c in report.capabilities]
        rows += [(f"sensor:{s['name']}", ("ok" if s["ok"] else "unavailable") + (" (optional)" if s["optional"] else ""),
                  f"needs {', '.join(s['needs'])}" + (f"; missing {', '.join(s['missing'])}" if s["missing"] else ""))
                 for s in sensors]
        click.echo(_table(rows))
    if not report.ok:
        for cap in report.missing_required:
            click.echo(f"missing {cap.name}: {cap.fix or cap.detail}", err=True)
        sys.exit(1)

"""Human text of the commands that are not about packets: the CLI's error
and warning lines, `lab status`/`lab down`, `doctor`'s report and `sql`'s
table. render.py holds the text about packets (journeys, summaries, runs);
both take plain values and return text, and neither prints."""

from __future__ import annotations

from typing import Iterable, Sequence

from tracer.errors import one_line
from tracer.text import printable
from tracer.units import size_text

ABORTED = "tracer: aborted"


def error_line(message: str) -> str:
    """The one line an error becomes on stderr, escaped for the terminal."""
    return f"tracer: error: {printable(one_line(message))}"


def gave_up_line(grace_s: float) -> str:
    """A stop that did not finish in time (tracer/stopping.py); the threads' stacks follow."""
    return (f"tracer: error: still not stopped {grace_s:g} s after being asked to; giving up "
            "(please report: where each thread was follows)")


def warning_line(message: str) -> str:
    """A warning a reader gives (a capture cut short, say), on stderr."""
    return f"tracer: warning: {message}"


def os_error_line(exc: OSError) -> str:
    """An I/O failure nothing above turned into a TracerError: 'FILE: reason'."""
    where = f"{exc.filename}: " if exc.filename else ""
    return f"tracer: error: {printable(where + one_line(exc.strerror or str(exc)))}"


def report_written_line(path: str, size: int) -> str:
    """`report`: where the page went and how big it is."""
    return f"tracer: wrote {path} ({size_text(size, 'kB', whole=True)})"


def parquet_written_line(sightings: int, files: int, under: str) -> str:
    return f"tracer: wrote {sightings:,} sightings to {files} Parquet file(s) under {under}"


def pcapng_written_line(packets: int, where: str) -> str:
    return f"tracer: wrote {packets:,} packets to {where}"


def demo_traffic_failed_line(exc: Exception) -> str:
    return f"tracer: demo traffic failed: {exc}"


# --------------------------------------------------------------------------- lab


def lab_status_text(st: dict) -> str:
    """`lab status`: one line, then one '  - problem' line per problem."""
    state = "up" if st["up"] else "not up"
    lines = [f"lab {state}: client netns {st['netns']} ({st['client_address']}) -> "
             f"{st['host_address']}:{st['port']} -> {st['container']} "
             f"({st['container_ip'] or '-'}:{st['container_port']}); "
             f"server {st['server_address']}:{st['server_port']}; {lab_mode_text(st)}"]
    lines += [f"  - {p}" for p in st["problems"]]
    return "\n".join(lines)


def lab_mode_text(st: dict) -> str:
    """'userland proxy on (docker-proxy)' / '... off (hairpin NAT; ...)'."""
    if st["userland_proxy"] is None:
        return "userland proxy unknown"
    if st["userland_proxy"]:
        return "userland proxy on (docker-proxy)"
    how = "dockerd restarted by `lab up --no-userland-proxy`; `lab up` restores it" if st["dockerd_switched"] \
        else "dockerd's own configuration"
    return f"userland proxy off (hairpin NAT; {how})"


def lab_removed_text(removed: Sequence[str]) -> str:
    """`lab down`: what it removed."""
    return "removed: " + (", ".join(removed) if removed else "nothing (lab was not up)")


def lab_image_line(image: str, image_id: str) -> str:
    """`lab image`: the image and its id."""
    return f"{image} {image_id}"


# --------------------------------------------------------------------------- doctor


def doctor_text(capabilities: Iterable, sensors: Iterable[dict]) -> str:
    """`doctor`'s table: each capability probed, then each sensor's readiness."""
    rows = [("capability", "status", "detail")]
    rows += [(c.name, c.status + ("" if c.required or c.ok else " (optional)"), c.detail) for c in capabilities]
    rows += [(f"sensor:{s['name']}", ("ok" if s["ok"] else "unavailable") + (" (optional)" if s["optional"] else ""),
              f"needs {', '.join(s['needs'])}" + (f"; missing {', '.join(s['missing'])}" if s["missing"] else ""))
             for s in sensors]
    return columns_text(rows, aligned=2)


def doctor_missing_line(cap) -> str:
    """A required capability that is missing, and how to get it."""
    return f"missing {cap.name}: {cap.fix or cap.detail}"


# --------------------------------------------------------------------------- tables


def columns_text(rows: Sequence[Sequence[str]], aligned: int | None = None) -> str:
    """Rows as columns two spaces apart, each padded to its widest cell
    (the first ``aligned`` columns only; the last column is never padded),
    trailing spaces stripped."""
    n = len(rows[0]) if aligned is None else aligned
    widths = [max(len(r[i]) for r in rows) for i in range(n)]
    return "\n".join("  ".join(c.ljust(widths[i]) if i < n else c for i, c in enumerate(r)).rstrip()
                     for r in rows)


def sql_cell(value: object) -> str:
    """A value in `sql`'s table: NULL for none."""
    return "NULL" if value is None else str(value)


def sql_times_as_text(batch):
    """``batch`` with its nanosecond timestamps (the sightings' ``time``) as
    text, '2026-11-30T05:29:35.209749850Z' (as the report writes them):
    Python's datetime holds microseconds, so pyarrow will not turn them into
    values. Other columns are left as they are."""
    import pyarrow as pa
    import pyarrow.compute as pc

    for i, f in enumerate(batch.schema):
        if pa.types.is_timestamp(f.type) and f.type.unit == "ns":
            column, suffix = batch.column(i), ""
            if f.type.tz is not None:  # Arrow keeps instants in UTC whatever the zone: write them so
                column, suffix = column.cast(pa.timestamp("ns", tz="UTC")), "Z"
            batch = batch.set_column(i, f.name, pc.strftime(column, format="%Y-%m-%dT%H:%M:%S" + suffix, locale="C"))
    return batch


def sql_more_rows_line(max_rows: int) -> str:
    return f"tracer: more than {max_rows:,} rows; --max-rows N or --format csv for all"

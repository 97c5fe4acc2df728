"""`tracer sql QUERY FILES`: DuckDB SQL over captures, offline.

The sightings of FILES are the table ``sightings`` in the columns of
``capture.reader.PRESENTED_SCHEMA`` (plain strings, signed ``ktime_ns``, unsigned
ids, NULL for unknown). FILES are captures (``.arrows``, streamed: DuckDB scans
them batch by batch) or Parquet files and directories written by ``tracer
export --parquet`` (read with Hive partitions, so ``host`` and ``date`` are
columns). A query that reads ``sightings`` more than once gets a copy in
DuckDB, which spills to disk past its memory limit.
"""

from __future__ import annotations

import csv
import json
import sys
from decimal import Decimal
from pathlib import Path

import click

from tracer.errors import TracerError, one_line


def _is_parquet(path: str) -> bool:
    p = Path(path)
    return p.suffix == ".parquet" or p.is_dir()


class _SqlCommand(click.Command):
    """A query may start with an SQL comment ("-- slowest flows\n..."), which
    click would take for an option: such an argument gets a leading newline
    (the same SQL to DuckDB) so that click reads it as the QUERY."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        args = ["\n" + a if a.startswith("--") and len(a) > 2 and a[2].isspace() else a for a in args]
        return super().parse_args(ctx, args)


@click.command(cls=_SqlCommand)
@click.argument("query")
@click.argument("files", nargs=-1, required=True, metavar="FILES...")
@click.option("--format", "fmt", type=click.Choice(["table", "csv", "json"]), default="table", show_default=True,
              help="json: one object per line.")
@click.option("--max-rows", type=click.IntRange(min=1), default=1000, show_default=True,
              help="Rows printed in table format (csv and json print all).")
def sql(query: str, files: tuple[str, ...], fmt: str, max_rows: int) -> None:
    """Run a DuckDB SQL QUERY over capture FILES (offline); the sightings are
    the table `sightings`, e.g.
    tracer sql "SELECT hook, count(*) FROM sightings GROUP BY hook" cap.arrows"""
    import duckdb

    from tracer.aggregate import connect, remove_spill_dir, spill_dir

    parquet = [f for f in files if _is_parquet(f)]
    captures = [f for f in files if not _is_parquet(f)]
    if parquet and captures:
        raise click.UsageError("give captures (.arrows) or Parquet exports, not both")
    spill = spill_dir()
    failure = _ReadFailure()
    try:
        con = connect(spill)
        try:
            if parquet:
                sources = [str(Path(p) / "**" / "*.parquet") if Path(p).is_dir() else p for p in parquet]
                for p in parquet:
                    if not Path(p).exists():
                        raise TracerError(f"{p}: no such file or directory")
                listed = ", ".join("'" + p.replace("'", "''") + "'" for p in sources)
                con.execute(f"CREATE VIEW sightings AS SELECT * FROM read_parquet([{listed}], hive_partitioning = true, "
                            "union_by_name = true)")
                rel = con.sql(query)
                result = None if rel is None else rel.to_arrow_reader(1 << 16)
            else:
                result = _over_captures(con, query, captures, failure)
            if result is None:
                return  # a statement without rows
            _print(result, fmt, max_rows)
        except duckdb.Error as exc:
            if failure.error is not None:  # a capture's own error, its one line (not DuckDB's report of it)
                raise failure.error from None
            raise TracerError(f"sql: {one_line(str(exc))}") from None
        finally:
            con.close()
    finally:
        remove_spill_dir(spill)


class _ReadFailure:
    """The error that stopped reading a capture while DuckDB scanned it
    (a batch found damaged): DuckDB reports an exception raised in a
    stream it reads as its own error, Python traceback text and all, so
    the reader's one line is kept here to be printed instead."""

    def __init__(self) -> None:
        self.error: TracerError | None = None

    def reader(self, stream):
        """``stream.presented_reader()`` (capture.reader.CaptureStream), watched."""
        import pyarrow as pa

        from tracer.capture.reader import PRESENTED_SCHEMA

        return pa.RecordBatchReader.from_batches(PRESENTED_SCHEMA, self._watched(stream.presented()))

    def _watched(self, batches):
        try:
            yield from batches
        except TracerError as exc:
            self.error = exc
            raise


def _over_captures(con, query: str, files: list[str], failure: _ReadFailure):
    """The query over the captures' sightings, streamed when it scans them
    once, over a copy in DuckDB when it needs them twice."""
    import duckdb

    from tracer.capture.reader import open_capture

    from tracer.render_commands import warning_line

    con.register("sightings", failure.reader(open_capture(files, on_warning=lambda w: click.echo(warning_line(w), err=True))))
    try:
        rel = con.sql(query)
        return None if rel is None else rel.to_arrow_reader(1 << 16)
    except duckdb.InvalidInputException as exc:
        if "already been consumed" not in str(exc):
            raise
    con.unregister("sightings")
    con.register("capture_reader", failure.reader(open_capture(files)))
    con.execute("CREATE TABLE sightings AS SELECT * FROM capture_reader")
    con.unregister("capture_reader")
    rel = con.sql(query)
    return None if rel is None else rel.to_arrow_reader(1 << 16)


def _print(result, fmt: str, max_rows: int) -> None:
    from tracer.render_commands import sql_times_as_text

    reader = result
    names = reader.schema.names
    out = sys.stdout
    if fmt == "csv":
        w = csv.writer(out, lineterminator="\n")
        w.writerow(names)
        for batch in map(sql_times_as_text, reader):
            for row in batch.to_pylist():
                w.writerow(["" if row[n] is None else row[n] for n in names])
        return
    if fmt == "json":
        for batch in map(sql_times_as_text, reader):
            for row in batch.to_pylist():
                out.write(json.dumps(row, default=_json_value) + "\n")
        return
    from tracer.render_commands import columns_text, sql_cell, sql_more_rows_line

    rows, more = [], False
    for batch in map(sql_times_as_text, reader):
        for row in batch.to_pylist():
            if len(rows) == max_rows:
                more = True
                break
            rows.append([sql_cell(row[n]) for n in names])
        if more:
            break
    out.write(columns_text([names] + rows) + "\n")
    if more:
        click.echo(sql_more_rows_line(max_rows), err=True)


def _json_value(value):
    """JSON for what json cannot write: DuckDB's sums (HUGEINT, DECIMAL) as
    numbers, times and anything else as text."""
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    return str(value)

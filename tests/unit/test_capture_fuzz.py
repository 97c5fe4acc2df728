"""Mutated captures: thousands of random truncations, byte flips and schema
changes of real captures (sighting rows, version 1, and journey rows,
version 2). Reading one, and showing or analysing it, must never end in a
traceback (or a crash): either a one-line error, or what could be read
(said so on stderr when the file was torn or not closed).

The mutations run in a worker process, so that a crash in native code would
be seen as one (and which file did it) rather than take pytest down."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pyarrow as pa

from tests.unit.test_capture import table_of
from tests.unit.test_capture import write as write_sightings
from tests.unit.test_journey_capture import write as write_journeys
from tests.unit.test_journey_records import records

REPO = Path(__file__).resolve().parents[2]
SEED = 1212
TRUNCATIONS, FLIPS, SCHEMAS = 800, 1200, 120
CLI_SAMPLE = 150  # of the mutants, also through `show --json` and `stats`


def _bases(tmp: Path) -> list[Path]:
    v1 = tmp / "v1.arrows"
    write_sightings(v1, [table_of(40, first_id=1), table_of(40, first_id=41, t0=20_000_000_000)])
    v2 = tmp / "v2.arrows"
    recs = records()
    write_journeys(v2, [recs[:3], recs[3:]])
    return [v1, v2]


def _schema_mutants(base: Path, out: Path, rng: random.Random, count: int) -> list[Path]:
    """The same rows rewritten with one column dropped, renamed, retyped or
    added, or the version in the metadata changed."""
    with pa.ipc.open_stream(base.read_bytes()) as reader:
        table = reader.read_all()
    meta = dict(table.schema.metadata or {})
    paths = []
    for i in range(count):
        t = table
        what = rng.choice(["drop", "rename", "string", "float", "int8", "extra", "version", "nulls"])
        name = rng.choice(t.column_names)
        at = t.schema.get_field_index(name)
        if what == "drop":
            t = t.remove_column(at)
        elif what == "rename":
            t = t.rename_columns([f"{n}_x" if n == name else n for n in t.column_names])
        elif what in ("string", "float", "int8"):
            col = t.column(name)
            if pa.types.is_dictionary(col.type):  # (a cast takes no dictionary of lists)
                col = pa.chunked_array([c.dictionary_decode() for c in col.chunks], col.type.value_type)
            if pa.types.is_timestamp(col.type):  # as its integer: to_pylist cannot make a datetime of ns
                col = col.cast(pa.int64())
            values = [None if v is None else (str(v) if what == "string" else v) for v in col.to_pylist()]
            if what == "float":
                values = [None if v is None else (1.5 if not isinstance(v, (int, float)) else float(v)) for v in values]
            if what == "int8":
                values = [None if v is None else (-3 if not isinstance(v, int) else (v % 256) - 128) for v in values]
            try:
                typed = pa.array(values, {"string": pa.string(), "float": pa.float64(), "int8": pa.int8()}[what])
            except (pa.ArrowException, TypeError, ValueError):
                typed = pa.array([str(v) for v in values], pa.string())
            t = t.set_column(at, pa.field(name, typed.type), typed)
        elif what == "extra":
            t = t.append_column("surprise", pa.array(["x"] * t.num_rows))
        elif what == "nulls":
            t = t.set_column(at, t.schema.field(at), pa.nulls(t.num_rows, t.schema.field(at).type))
        schema = t.schema.with_metadata(meta)
        if what == "version":
            schema = schema.with_metadata({**meta, b"tracer.schema_version": rng.choice([b"3", b"", b"x.y", b"1.9", b"0"])})
        path = out / f"{base.stem}-schema-{i}-{what}-{name}.arrows"
        with pa.ipc.new_stream(str(path), schema) as w:
            w.write_table(t.cast(schema) if what != "version" else t.replace_schema_metadata(schema.metadata))
        paths.append(path)
    return paths


def _mutants(tmp: Path) -> list[Path]:
    rng = random.Random(SEED)
    out = tmp / "mutants"
    out.mkdir()
    paths: list[Path] = []
    for base in _bases(tmp):
        data = base.read_bytes()
        for i in range(TRUNCATIONS // 2):
            cut = rng.randrange(0, len(data))
            p = out / f"{base.stem}-cut-{i}.arrows"
            p.write_bytes(data[:cut])
            paths.append(p)
        for i in range(FLIPS // 2):
            buf = bytearray(data)
            for _ in range(rng.randint(1, 8)):
                buf[rng.randrange(len(buf))] ^= rng.randint(1, 255)
            p = out / f"{base.stem}-flip-{i}.arrows"
            p.write_bytes(bytes(buf))
            paths.append(p)
        paths += _schema_mutants(base, out, rng, SCHEMAS // 2)
    return paths


# Run in a separate process: reads every mutant, and for some also runs the
# CLI's show --json and stats; prints one JSON line of findings.
_WORKER = r"""
import json, sys, traceback
sys.path.insert(0, sys.argv[1])
from click.testing import CliRunner
from tracer.capture import CaptureReadError
from tracer.capture.reader import read_capture
from tracer.cli import cli
from tracer.journey_json import journey_json_block
from tracer.journey_rows import journey_rows

paths = json.loads(open(sys.argv[2]).read())
cli_every = int(sys.argv[3])
progress = open(sys.argv[4], "w")
found = {"read": 0, "error": 0, "partial": 0, "problems": []}
for n, path in enumerate(paths):
    progress.write(path + "\n"); progress.flush()
    try:
        cap = read_capture(path)
        journey_json_block(journey_rows(cap.events))
        found["partial" if cap.recovered else "read"] += 1
    except CaptureReadError as exc:
        found["error"] += 1
        if "\n" in str(exc) or not str(exc).strip():
            found["problems"].append([path, "error not one line: " + repr(str(exc))])
    except Exception:
        found["problems"].append([path, traceback.format_exc(limit=3)[-600:]])
    if n % cli_every == 0:
        for args in (["show", "--json", path], ["stats", "--format", "json", path]):
            r = CliRunner().invoke(cli, args)
            if r.exception is not None and not isinstance(r.exception, SystemExit):
                found["problems"].append([path, " ".join(args[:-1]) + ": " + "".join(
                    traceback.format_exception(r.exception, limit=3))[-600:]])
            elif r.exit_code not in (0, 1, 2):
                found["problems"].append([path, f"{args[0]} exit {r.exit_code}"])
            elif r.exit_code != 0:
                errors = [l for l in r.output.splitlines() if l.startswith("tracer: error:")]
                if len(errors) != 1 or "Traceback" in r.output:
                    found["problems"].append([path, f"{args[0]}: not one error line: {r.output[-300:]!r}"])
print(json.dumps(found))
"""


def test_mutated_captures_never_end_in_a_traceback(tmp_path):
    paths = [str(p) for p in _mutants(tmp_path)]
    assert len(paths) >= 2000
    listing = tmp_path / "paths.json"
    listing.write_text(json.dumps(paths))
    progress = tmp_path / "progress"
    proc = subprocess.run(
        [sys.executable, "-c", _WORKER, str(REPO), str(listing), str(len(paths) // CLI_SAMPLE), str(progress)],
        capture_output=True, text=True, timeout=900, cwd=REPO, env={**os.environ, "TRACER_FILE_MODE": ""},
    )
    last = progress.read_text().splitlines()[-1:] if progress.exists() else []
    assert proc.returncode == 0, f"worker died ({proc.returncode}) at {last}: {proc.stderr[-2000:]}"
    found = json.loads(proc.stdout.strip().splitlines()[-1])
    assert not found["problems"], f"{len(found['problems'])} mutants ended badly; first: {found['problems'][:3]}"
    # The mix is real: some mutants read whole, some partly (said so), many refused.
    assert found["error"] > 100 and found["partial"] > 50 and found["read"] > 10, found
    assert found["read"] + found["partial"] + found["error"] == len(paths)

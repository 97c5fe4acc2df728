"""The README's DuckDB queries (docs/queries.md, ```sql blocks) run by
`tracer sql` on the synthetic capture with known answers, and the polars
queries on the same capture written by the real writer (dictionary deltas,
several batches), which `pl.read_ipc_stream` cannot read; the Parquet export
(one file and Hive partitions) read back by DuckDB and polars."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from click.testing import CliRunner

from tests.unit.analysis_data import METADATA, capture_table, event_table, lab_capture, write_capture
from tracer.capture.writer import CaptureWriter
from tracer.cli import cli

pl = pytest.importorskip("polars")
QUERIES = Path(__file__).resolve().parents[2] / "docs" / "queries.md"


def sql_blocks() -> dict[str, str]:
    blocks = re.findall(r"```sql\n(.*?)```", QUERIES.read_text(), re.S)
    return {b.splitlines()[0].removeprefix("-- ").strip(): b for b in blocks}


@pytest.fixture(scope="module")
def lab():
    return lab_capture()


def real_writer_capture(path: Path, rows: list[dict]) -> Path:
    """The rows through CaptureWriter, a batch per packet-ish slice: the
    stream carries dictionary deltas, as `tracer record` writes it."""
    table = event_table(rows)
    with CaptureWriter(path, METADATA) as w:
        for start in range(0, table.num_rows, 40):
            w.add_events(table.slice(start, 40))
            w.flush()
    return path


@pytest.fixture(scope="module", params=["test writer", "real writer"])
def capture(request, lab, tmp_path_factory) -> Path:
    rows, _ = lab
    where = tmp_path_factory.mktemp("sql")
    if request.param == "test writer":
        return write_capture(where / "capture.arrows", capture_table(rows))
    return real_writer_capture(where / "capture.arrows", rows)


def run_sql(query: str, *files: Path) -> list[dict]:
    result = CliRunner().invoke(cli, ["sql", "--format", "json", "--", query, *map(str, files)])
    assert result.exit_code == 0, result.output
    return [json.loads(line) for line in result.stdout.splitlines()]


def test_doc_has_the_three_sql_queries():
    assert set(sql_blocks()) >= {"p99 latency per hop segment", "slowest flows",
                                 "drops by reason, with the hook where each dropped packet was last seen"}
    readme = (QUERIES.parents[1] / "README.md").read_text()
    for block in sql_blocks().values():
        assert block in readme, "README.md and docs/queries.md differ: paste docs/queries.md into the README"


def test_sql_segments(capture, lab):
    _, exp = lab
    got = {r["segment"]: r for r in run_sql(sql_blocks()["p99 latency per hop segment"], capture)}
    expected = exp.by_segment()
    assert set(got) == set(expected)
    for seg, gaps in expected.items():
        assert got[seg]["packets"] == len(gaps)
        assert got[seg]["p99_us"] == pytest.approx(np.percentile(gaps, 99) / 1e3), seg


def test_sql_slowest_flows(capture, lab):
    _, exp = lab
    flows = run_sql(sql_blocks()["slowest flows"], capture)
    flow, slowest = exp.slowest_flow()
    assert flows[0]["flow_id"] == flow and flows[0]["container"] == "web"
    assert flows[0]["slowest_us"] == pytest.approx(slowest / 1e3)
    for f in flows:
        assert (f["packets"], f["bytes"]) == (exp.flow_packets[f["flow_id"]], exp.flow_bytes[f["flow_id"]])


def test_sql_drops(capture, lab):
    _, exp = lab
    rows = run_sql(sql_blocks()["drops by reason, with the hook where each dropped packet was last seen"], capture)
    assert {(r["drop_reason"], r["last_seen"]): r["packets"] for r in rows} == dict(exp.drops)
    assert rows[0]["drop_reason"] == "NETFILTER_DROP"


def test_a_query_starting_with_a_comment_is_the_query_not_an_option(capture):
    """The docs' blocks start with "-- what it shows": pasted as they are,
    without click's "--", options before or after."""
    block = sql_blocks()["slowest flows"]
    for args in (["sql", f"-- slowest flows\n{block}", str(capture), "--format", "json"],
                 ["sql", "--format", "json", f"--\tslowest flows\n{block}", str(capture)]):
        result = CliRunner().invoke(cli, args)
        assert result.exit_code == 0, result.output
        assert [json.loads(line) for line in result.stdout.splitlines()] == run_sql(block, capture)
    result = CliRunner().invoke(cli, ["sql", "--fromat", "json", block, str(capture)])
    assert result.exit_code == 2 and "--fromat" in result.output, "a mistyped option is still an error"


def test_sql_presents_signed_time_and_null_for_unknown(capture, lab):
    rows, _ = lab
    (r,) = run_sql("SELECT any_value(typeof(ktime_ns)) AS t, max(ktime_ns) - min(ktime_ns) AS span, count(*) AS n, "
                   "count(flow_id) AS with_flow, count(skb) AS with_skb FROM sightings", capture)
    kt = [x["ktime_ns"] for x in rows]
    assert (r["t"], r["span"], r["n"]) == ("BIGINT", max(kt) - min(kt), len(rows))
    assert r["with_flow"] == sum(1 for x in rows if x.get("flow_id"))
    assert r["with_skb"] == sum(1 for x in rows if x.get("skb"))


def test_polars_queries_on_the_real_writers_capture(lab, tmp_path):
    """docs/queries.md's polars blocks, as written, on a capture with deltas."""
    rows, exp = lab
    real_writer_capture(tmp_path / "capture.arrows", rows)
    ns: dict = {}
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        for block in re.findall(r"```python\n(.*?)```", QUERIES.read_text(), re.S):
            exec(compile(block, str(QUERIES), "exec"), ns)
    finally:
        os.chdir(cwd)
    assert {(r["drop_reason"], r["last_seen"]): r["packets"] for r in ns["drops"].to_dicts()} == dict(exp.drops)
    assert ns["slowest_flows"].to_dicts()[0]["flow_id"] == exp.slowest_flow()[0]


def test_parquet_export_flat_and_hive(lab, tmp_path):
    rows, exp = lab
    cap = real_writer_capture(tmp_path / "lab.arrows", rows)
    runner = CliRunner()
    flat = tmp_path / "one.parquet"
    assert runner.invoke(cli, ["export", "--parquet", str(flat), str(cap)]).exit_code == 0
    df = pl.read_parquet(flat)
    assert df.height == len(rows) and df["ktime_ns"].dtype == pl.Int64
    assert set(df["host"]) == {"lab-host"} and set(df["date"]) == {"2025-06-15"}
    assert df["flow_id"].null_count() == sum(1 for r in rows if not r.get("flow_id"))
    assert oct(flat.stat().st_mode & 0o777) == "0o600"

    # Two hosts' exports into one directory are one dataset.
    other = tmp_path / "other.arrows"
    with CaptureWriter(other, {**METADATA, "host": "other-host"}) as w:
        w.add_events(event_table(rows))
    hive = tmp_path / "dataset"
    for path in (cap, other):
        assert runner.invoke(cli, ["export", "--parquet", str(hive), str(path)]).exit_code == 0
    assert len(list((hive / "host=lab-host" / "date=2025-06-15").glob("lab-2025-06-15T150640Z-*.parquet"))) == 1
    assert len(list((hive / "host=other-host" / "date=2025-06-15").glob("other-*.parquet"))) == 1
    got = run_sql("SELECT host, date, count(*) AS n FROM sightings GROUP BY ALL ORDER BY host", hive)
    assert got == [{"host": "lab-host", "date": "2025-06-15", "n": len(rows)},
                   {"host": "other-host", "date": "2025-06-15", "n": len(rows)}]
    lazy = pl.scan_parquet(str(hive / "**" / "*.parquet"), hive_partitioning=True)
    assert lazy.select(pl.len()).collect().item() == 2 * len(rows)
    # the README's SQL runs on the dataset too
    segs = {r["segment"]: r["packets"] for r in run_sql(sql_blocks()["p99 latency per hop segment"], flat)}
    assert segs == {k: len(v) for k, v in exp.by_segment().items()}


def test_parquet_exports_of_the_same_host_and_date_add_up(lab, tmp_path):
    # Rotated captures all start cap.0000.arrows: two of them, one host,
    # one date, exported into one dataset, keep both captures' rows.
    import pyarrow.dataset as ds

    rows, _ = lab
    table = event_table(rows)
    caps = []
    for i, (start, part) in enumerate([("2025-06-15T15:06:40Z", table),
                                        ("2025-06-15T18:00:00Z", table.slice(0, 100))]):
        path = tmp_path / f"run{i}" / "cap.0000.arrows"
        path.parent.mkdir()
        with CaptureWriter(path, {**METADATA, "start_time": start}) as w:
            w.add_events(part)
        caps.append(path)
    hive = tmp_path / "dataset"
    runner = CliRunner()
    for path in caps:
        result = runner.invoke(cli, ["export", "--parquet", str(hive), str(path)])
        assert result.exit_code == 0, result.output
    files = sorted((hive / "host=lab-host" / "date=2025-06-15").iterdir())
    assert len(files) == 2, files
    assert run_sql("SELECT count(*) AS n FROM sightings", hive) == [{"n": len(rows) + 100}]
    dataset = ds.dataset(str(hive), format="parquet", partitioning="hive")
    assert dataset.count_rows() == len(rows) + 100


@pytest.mark.parametrize("args", [
    ["sql", "SELEC nonsense FROM sightings", "{cap}"],
    ["sql", "SELECT * FROM sightings", "{tmp}/missing.arrows"],
    ["sql", "SELECT 1", "{tmp}/missing.parquet"],
    ["sql", "SELECT * FROM no_such_table", "{cap}"],
    ["export", "{cap}"],
])
def test_bad_input_is_one_line(args, lab, tmp_path):
    rows, _ = lab
    cap = write_capture(tmp_path / "cap.arrows", capture_table(rows))
    argv = [a.format(cap=cap, tmp=tmp_path) for a in args]
    proc = subprocess.run([sys.executable, "-m", "tracer", *argv], capture_output=True, text=True)
    assert proc.returncode != 0, proc
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr, proc.stderr


def test_sql_reads_a_table_twice(capture):
    """A self-join needs the sightings twice: tracer copies them into DuckDB."""
    (r,) = run_sql("SELECT count(*) AS n FROM sightings a JOIN sightings b USING (packet_id) "
                   "WHERE a.hook = 'drop' AND b.hook = 'tc_ingress'", capture)
    assert r["n"] == 3


def test_docs_say_only_ktime_ns_is_signed():
    # Ids stay unsigned: older captures hold kernel addresses above 2^63.
    from tracer import parquet
    from tracer.cli import sql as cli_sql
    from tracer.capture.reader import PRESENTED_SCHEMA

    assert PRESENTED_SCHEMA.field("ktime_ns").type == pa.int64()
    assert {PRESENTED_SCHEMA.field(n).type for n in ("packet_id", "flow_id", "skb")} == {pa.uint64()}
    root = Path(__file__).resolve().parents[2]
    for name, text in [("README.md", (root / "README.md").read_text()), ("docs/queries.md", QUERIES.read_text()),
                       ("parquet.py", parquet.__doc__), ("cli/sql.py", cli_sql.__doc__)]:
        flat = " ".join(text.split())
        assert not re.search(r"signed (``)?ktime_ns(``)? and ids|ktime_ns` and ids as signed|(?<!un)signed ids", flat), name
        assert "unsigned" in flat, name

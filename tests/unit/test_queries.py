"""The README's polars queries (docs/queries.md), executed as written, on a
synthetic capture with known answers: README and tests cannot drift apart."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from tests.unit.analysis_data import capture_table, lab_capture, write_capture

pl = pytest.importorskip("polars")
QUERIES = Path(__file__).resolve().parents[2] / "docs" / "queries.md"


def code_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", QUERIES.read_text(), re.S)


@pytest.fixture(scope="module")
def answers(tmp_path_factory):
    rows, exp = lab_capture()
    where = tmp_path_factory.mktemp("queries")
    write_capture(where / "capture.arrows", capture_table(rows))
    namespace: dict = {}
    import os

    cwd = os.getcwd()
    os.chdir(where)  # the queries read "capture.arrows" like a user would
    try:
        for block in code_blocks():
            exec(compile(block, str(QUERIES), "exec"), namespace)
    finally:
        os.chdir(cwd)
    return namespace, exp


def test_doc_has_the_three_queries():
    text = "\n".join(code_blocks())
    for name in ("segments =", "slowest_flows =", "drops ="):
        assert name in text


def test_per_segment_p99(answers):
    ns, exp = answers
    got = {r["segment"]: r for r in ns["segments"].to_dicts()}
    expected = exp.by_segment()
    assert set(got) == set(expected)
    for seg, gaps in expected.items():
        assert got[seg]["packets"] == len(gaps)
        assert got[seg]["p99_us"] == pytest.approx(np.percentile(gaps, 99) / 1e3), seg
    assert ns["segments"]["segment"][0] == "tc_egress@veth → tc_ingress@container"


def test_slowest_flows(answers):
    ns, exp = answers
    flows = ns["slowest_flows"].to_dicts()
    flow, slowest = exp.slowest_flow()
    assert flows[0]["flow_id"] == flow
    assert flows[0]["slowest_us"] == pytest.approx(slowest / 1e3)
    assert flows[0]["container"] == "web"
    for f in flows:
        assert (f["packets"], f["bytes"]) == (exp.flow_packets[f["flow_id"]], exp.flow_bytes[f["flow_id"]])


def test_drops_by_reason(answers):
    ns, exp = answers
    got = {(r["drop_reason"], r["last_seen"]): r["packets"] for r in ns["drops"].to_dicts()}
    assert got == dict(exp.drops)
    assert ns["drops"]["drop_reason"][0] == "NETFILTER_DROP"


def test_readme_shows_the_same_queries():
    readme = (QUERIES.parents[1] / "README.md").read_text()
    blocks = code_blocks()
    assert len(blocks) >= 4
    for block in blocks:
        assert block in readme, "README.md and docs/queries.md differ: paste docs/queries.md into the README"

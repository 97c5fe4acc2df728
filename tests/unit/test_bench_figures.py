"""The figures every benchmark prints (scripts/bench_figures.py) and the
live rounds bench_bpf and bench_bpf_breakdown share (bench_bpf.live_rounds):
pure logic, no BPF."""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest

from tests.unit.script_modules import load_script





@pytest.fixture(scope="module")
def figures():
    return load_script("bench_figures")


def test_tree_env_puts_the_tree_first_and_keeps_the_callers_pythonpath(figures):
    env = figures.tree_env(Path("/t/tree"), {"PYTHONPATH": "/extra:/more", "HOME": "/root"})
    assert env["PYTHONPATH"] == "/t/tree:/extra:/more" and env["HOME"] == "/root"
    assert figures.tree_env(Path("/t/tree"), {})["PYTHONPATH"] == "/t/tree"


def test_rounds_that_measured_nothing_are_left_out(figures):
    assert figures.median_interval([None, None]) == "n/a"
    assert figures.median_interval([1.0, None, 3.0, 2.0]).startswith("2.00 s [")
    assert figures.median_interval([5.0], unit="") == "5.00 [5.00-5.00]"
    # a round either side missed, or a zero baseline, has no ratio
    assert figures.round_ratios([2.0, None, 3.0, 4.0], [1.0, 1.0, None, 0.0]) == [2.0]
    assert figures.ratio_interval([None], [1.0]) == "n/a"
    assert figures.ratio_interval([2.0, 4.0, 6.0], [1.0, 2.0, 3.0]) == "2.000 [2.000-2.000]"


def test_live_rounds_alternate_and_say_what_was_left_out(monkeypatch, capsys):
    bb = load_script("bench_bpf")
    ran = []

    def live_round(tree, status, requests, noop=False, mode="trace"):
        ran.append((tree, noop))
        assert mode == "trace"
        return "ab failed" if len(ran) == 2 else {"progs": {}, "rate": 1.0, "journeys": 0, "hops": 0}

    monkeypatch.setattr(bb, "live_round", live_round)
    monkeypatch.setattr(bb.bo, "bpf_stats_on", contextlib.nullcontext)
    trees = {"a": Path("/a"), "b": Path("/b"), "c": Path("/c")}
    got = list(bb.live_rounds({}, trees, 2, 10, noop=("c",)))
    assert [(r, name) for r, name, _ in got] == [(0, "a"), (0, "b"), (0, "c"), (1, "c"), (1, "b"), (1, "a")]
    assert [res is None for *_, res in got] == [False, True, False, False, False, False]
    assert "round 1 b   : left out (ab failed)" in capsys.readouterr().out
    assert [noop for _, noop in ran] == [False, False, True, True, False, False]
    ordered = list(bb.live_rounds({}, trees, 1, 10, order=lambda r: ("b",)))
    assert [name for _, name, _ in ordered] == ["b"]


def test_rounds_with_other_traffic_on_the_port_are_left_out_and_said(capsys):
    """bench_bpf --live --base: a round where either side traced someone
    else's traffic too (sightings per request above the run's fewest by more
    than OTHER_TRAFFIC) is left out of the ratios."""
    bb = load_script("bench_bpf")
    requests = 1000

    def side(per_request, runs=None):
        return [{"hops": int(h * requests), "progs": {"trc_nf_b": (0, int(r * requests))}}
                for h, r in zip(per_request, runs or [110.0] * len(per_request))]

    res = {"base": side([108.9, 274.0, 109.0, 111.0, 109.0]),
           "new": side([109.0, 108.9, 115.0, 109.5, 109.0], [110.0, 110.0, 110.0, 110.0, 180.0])}
    assert bb._without_other_traffic(res, [0, 1, 2, 3, 4], requests) == [0, 3]
    out = capsys.readouterr().out
    assert "round 2 left out: other traffic (base 274.0, new 108.9 sightings" in out
    assert "round 3 left out" in out and "round 1 left out" not in out and "round 4 left out" not in out
    assert "round 5 left out" in out  # untraced traffic: runs without hops
    assert bb._without_other_traffic(res, [], requests) == []

"""How the A/B benchmarks choose and set up their rounds (pure logic, no
BPF): bench_bpf's other-traffic filter compares each revision with its own
median, and bench_start's in-process runs leave the caller's environment as
it was, so baseline CLI runs always get the cache state they were given."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.unit.script_modules import load_script

ROOT = Path(__file__).resolve().parents[2]




def _res(base: list[float], new: list[float], requests: int = 100) -> dict:
    return {"base": [{"hops": h * requests} for h in base], "new": [{"hops": h * requests} for h in new]}


def test_revisions_with_different_hop_counts_keep_their_rounds():
    bb = load_script("bench_bpf")
    # new records 10 % more hops per request than base in every round: a
    # pooled median would put every round of new above it and drop them all
    res = _res([10.0, 10.0, 10.1, 10.0], [11.0, 11.0, 11.0, 11.1])
    assert bb._without_other_traffic(res, [0, 1, 2, 3], 100) == [0, 1, 2, 3]


def test_a_round_with_other_traffic_on_either_side_is_left_out(capsys):
    bb = load_script("bench_bpf")
    res = _res([10.0, 10.0, 14.0, 10.0, 10.0], [11.0, 11.0, 11.0, 11.0, 15.0])
    assert bb._without_other_traffic(res, [0, 1, 2, 3, 4], 100) == [0, 1, 3]
    out = capsys.readouterr().out
    assert "round 3 left out" in out and "round 5 left out" in out


def test_no_round_kept_stops_with_a_message_not_an_index_error(monkeypatch, capsys):
    bb = load_script("bench_bpf")
    monkeypatch.setattr(bb.bo, "lab_status", lambda: {"url": "http://x:8000/"})
    monkeypatch.setattr(bb, "live_rounds", lambda *a, **k: iter([(0, "base", None), (0, "new", None)]))
    monkeypatch.setattr(bb, "_report_ab", lambda *a, **k: pytest.fail("reported an empty A/B"))
    with pytest.raises(SystemExit) as exc:
        bb.bench_live_ab(ROOT, 1, 10)
    assert "no round to compare" in str(exc.value.code)


def test_environ_set_puts_back_an_unset_variable(monkeypatch):
    bs = load_script("bench_start")
    monkeypatch.delenv("TRACER_PROGRAM_CACHE_DIR", raising=False)
    with pytest.raises(RuntimeError):
        with bs.environ_set("TRACER_PROGRAM_CACHE_DIR", "/tmp/cold-ip-1"):
            assert os.environ["TRACER_PROGRAM_CACHE_DIR"] == "/tmp/cold-ip-1"
            raise RuntimeError("session failed")
    assert "TRACER_PROGRAM_CACHE_DIR" not in os.environ


def test_environ_set_puts_back_a_previous_value(monkeypatch):
    bs = load_script("bench_start")
    monkeypatch.setenv("TRACER_PROGRAM_CACHE_DIR", "/tmp/mine")
    with bs.environ_set("TRACER_PROGRAM_CACHE_DIR", "/tmp/warm"):
        pass
    assert os.environ["TRACER_PROGRAM_CACHE_DIR"] == "/tmp/mine"


def test_every_cli_run_gets_an_explicit_cache_state(tmp_path):
    bs = load_script("bench_start")
    cold, warm = tmp_path / "cold-3", tmp_path / "warm"
    assert bs.run_env("cold", cold, warm) == {"TRACER_PROGRAM_CACHE_DIR": str(cold)}
    assert bs.run_env("warm", cold, warm) == {"TRACER_PROGRAM_CACHE_DIR": str(warm)}
    assert bs.run_env(None, cold, None) == {"TRACER_PROGRAM_CACHE": "0"}

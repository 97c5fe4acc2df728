"""The vectorised --json path (pop_complete_table, journey_json_lines,
Summary.add_table) against the object path (pop_complete, to_json_dict,
Summary.add) on randomized synthetic event tables."""

from __future__ import annotations

import json
import random

import numpy as np
import pyarrow as pa
import pytest

from tracer.events import EVENT_SCHEMA, FLAG_IN_CONTAINER_NS
from tracer.journey_json import journey_json_block, journey_json_lines
from tracer.journey_assembler import JourneyAssembler
from tracer.journey_rows import journeys_of_table
from tracer.journeys import build_journeys
from tracer.render import Summary

HOOKS = ["tc_ingress", "tc_egress", "nf_prerouting", "nf_input", "nf_forward", "nf_output", "nf_postrouting", "drop"]
STAGES = [None, "before", "after"]
# (ifname, if_role, netns, container name, container id)
PLACES = [
    ("eth0", "external", 4026531840, None, None),
    ("docker0", "bridge", 4026531840, None, None),
    ("veth1", "veth", 4026531840, "web", "a" * 64),
    ("eth0", "container", 4026532500, "web", "a" * 64),
    ("eth0", None, 4026532600, None, "b" * 64),  # unnamed container: short id
    ("vethé\"x", None, 4026532700, "", "c" * 64),  # needs JSON escaping; empty name
    (None, None, 0, None, None),
]
IPS = ["198.18.0.2", "198.18.0.1", "172.17.0.2", "10.0.0.5", None]
REASONS = ["NETFILTER_DROP", "NO_SOCKET", None]


def random_rows(rng: random.Random, packets: int) -> list[dict]:
    rows = []
    t = 1_000_000
    for pid in range(1, packets + 1):
        t += rng.randrange(0, 5_000)
        proto = rng.choice(["tcp", "tcp", "udp", "icmp", None])
        flow = rng.choice([0, 0xFFFF888012345600 + rng.randrange(4)])
        direction = rng.choice(["original", "reply", None])
        sport, dport = rng.randrange(65536), rng.choice([80, 8000, 8080])
        for h in range(rng.randrange(1, 11)):
            hook = rng.choice(HOOKS) if rng.random() < 0.8 else rng.choice(["tc_ingress", "nf_input"])
            ifname, role, netns, cname, cid = rng.choice(PLACES)
            nf = hook.startswith("nf_")
            row = {
                "time": None, "hook": hook,
                "ktime_ns": t + rng.randrange(0, 30) * 1_000 * (h > 0),  # ties happen
                "nat_stage": rng.choice(STAGES) if nf or rng.random() < 0.1 else None,
                "ifindex": 1, "ifname": ifname, "if_role": role, "out_ifindex": 0, "netns": netns,
                "container_id": cid, "container_name": cname, "skb": 0,
                "packet_id": pid if rng.random() > 0.01 else 0,
                "flow_id": flow if nf else 0, "direction": direction if nf else None,
                "protocol": None if hook == "drop" and rng.random() < 0.5 else proto,
                "src_ip": None if hook == "drop" and rng.random() < 0.7 else rng.choice(IPS),
                "src_port": sport, "dst_ip": None if hook == "drop" and rng.random() < 0.7 else rng.choice(IPS),
                "dst_port": dport, "ip_id": 1, "ttl": 64, "length": 60,
                "tcp_flags": rng.choice([0x02, 0x12, 0x10, 0x18, 0, None]), "tcp_seq": 0, "tcp_ack": 0,
                "drop_reason": rng.choice(REASONS) if hook == "drop" else None, "cpu": 0,
                "flags": FLAG_IN_CONTAINER_NS if rng.random() < 0.2 else 0,
            }
            rows.append(row)
    return rows


def batches(rows: list[dict], rng: random.Random, n: int) -> list[pa.Table]:
    rows = rows[:]
    rng.shuffle(rows)
    cuts = sorted(rng.sample(range(1, len(rows)), n - 1))
    return [pa.Table.from_pylist(rows[a:b], schema=EVENT_SCHEMA) for a, b in zip([0, *cuts], [*cuts, len(rows)])]


def object_lines(table: pa.Table) -> list[str]:
    return [json.dumps(j.to_json_dict()) for j in build_journeys(table)]


@pytest.mark.parametrize("seed", range(8))
def test_json_lines_match_the_object_path(seed):
    rng = random.Random(seed)
    table = pa.concat_tables(batches(random_rows(rng, 300), rng, 4))
    lines = journey_json_lines(table)
    assert lines == object_lines(table)
    # The data covers what the vectorised path has to get right.
    seen = [json.loads(x) for x in lines]
    assert {j["verdict"] for j in seen} == {"delivered", "dropped", "unknown"}
    assert {j["protocol"] for j in seen} >= {"icmp", "tcp", None}
    assert any(j["flow_id"] is None for j in seen) and any(j["flow_id"] for j in seen)
    assert any(j["container"] == "b" * 12 for j in seen)
    assert any(h["hook"] == "drop" and h["src"] for j in seen for h in j["hops"])


@pytest.mark.parametrize("seed", range(4))
def test_journeys_of_table_match_build_journeys(seed):
    rng = random.Random(50 + seed)
    table = pa.concat_tables(batches(random_rows(rng, 300), rng, 3))
    fast, slow = journeys_of_table(table), build_journeys(table)
    assert fast == slow
    assert [j.last_seen for j in fast] == [j.last_seen for j in slow]


@pytest.mark.parametrize("seed", range(4))
def test_assembler_tables_match_journeys_across_batches(seed):
    rng = random.Random(100 + seed)
    rows = random_rows(rng, 400)
    parts = batches(rows, rng, 6)
    slow, fast = JourneyAssembler(), JourneyAssembler()
    s_old, s_new = Summary(), Summary()
    lines_old, lines_new = [], []
    horizon = max(r["ktime_ns"] for r in rows)
    for i, part in enumerate(parts):
        slow.add(part)
        fast.add(part)
        now = horizon * (i + 1) // len(parts)
        js = slow.pop_complete(200_000, now)
        tab = fast.pop_complete_table(200_000, now)
        assert len(set(tab["packet_id"].to_pylist())) == len(js)
        lines_old += [json.dumps(j.to_json_dict()) for j in js]
        lines_new += journey_json_lines(tab)
        s_old.add(js)
        s_new.add_table(tab)
        assert slow.late_rows == fast.late_rows
    js, tab = slow.flush(), fast.flush_table()
    lines_old += [json.dumps(j.to_json_dict()) for j in js]
    lines_new += journey_json_lines(tab)
    s_old.add(js)
    s_new.add_table(tab)
    assert lines_new == lines_old
    assert s_new.to_dict() == s_old.to_dict()
    assert s_new.render(color=False) == s_old.render(color=False)


def test_table_is_sorted_across_batches():
    # flow_id/direction are left as the rows had them: journey_rows fills
    # them per packet (the equivalence tests above check the result).
    rng = random.Random(7)
    rows = random_rows(rng, 50)
    a = JourneyAssembler()
    for part in batches(rows, rng, 4):
        a.add(part)
    tab = a.pop_complete_table(0, 10**12)
    pid, kt = tab["packet_id"].to_numpy(), tab["ktime_ns"].to_numpy()
    assert np.all((pid[1:] > pid[:-1]) | ((pid[1:] == pid[:-1]) & (kt[1:] >= kt[:-1])))
    assert tab.num_rows == sum(1 for r in rows if r["packet_id"])
    assert a.pending_rows == 0


def test_summary_add_table_matches_add_past_the_sample_cap():
    rng = random.Random(3)
    table = pa.Table.from_pylist(random_rows(rng, 400), schema=EVENT_SCHEMA)
    old, new = Summary(sample_cap=20), Summary(sample_cap=20)
    old.add(build_journeys(table))
    new.add_table(table)
    assert new.to_dict() == old.to_dict()


def test_empty_tables():
    empty = EVENT_SCHEMA.empty_table()
    assert journey_json_lines(empty) == []
    a = JourneyAssembler()
    assert journey_json_lines(a.pop_complete_table(0, 10)) == []
    s = Summary()
    s.add_table(a.flush_table())
    assert s.to_dict() == Summary().to_dict()


@pytest.mark.parametrize("seed", range(4))
def test_json_block_is_the_lines_with_newlines(seed):
    rng = random.Random(300 + seed)
    table = pa.concat_tables(batches(random_rows(rng, 120), rng, 3))
    block, count = journey_json_block(table)
    lines = journey_json_lines(table)
    assert count == len(lines)
    assert bytes(block).decode() == "".join(line + "\n" for line in lines)


def test_json_block_of_nothing():
    block, count = journey_json_block(EVENT_SCHEMA.empty_table())
    assert (bytes(block), count) == (b"", 0)


@pytest.mark.parametrize("seed", range(6))
def test_column_wise_text_is_render_journey(seed):
    """render_rows (trace's and show's human output) against render_journey,
    on random journeys: drops without addresses, ICMP, unnamed containers,
    null protocols, with and without colour."""
    from tracer.journey_rows import journey_rows
    from tracer.render import render_journey
    from tracer.render_rows import render_rows

    rng = random.Random(90 + seed)
    table = pa.concat_tables(batches(random_rows(rng, 300), rng, 3))
    rows = journey_rows(table)
    for color in (False, True):
        expected = "".join(render_journey(j, color) + "\n" for j in build_journeys(table))
        assert bytes(render_rows(rows, color)).decode() == expected

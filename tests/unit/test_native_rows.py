"""Journey rows from the kernel's records, two ways that must agree: the
compiled passes (native/journey_rows.c via tracer/native_rows.py, what
`trace` runs) and the numpy path (journey_records.journey_rows_numpy, the
reference and the fallback).

On the same records both give the same rows (every hop's and packet's
values, compared decoded, since each path may number distinct values in
its own order) and so the same JSON lines, human text, summary and proxy
annotations, byte for byte: packets in parts (a drop after delivery, more
hops than a record holds, parts in any order), drops with and without a
reason the kernel names, incomplete journeys, ICMP, IPv6, two containers
whose eth0 share an ifindex, hostile names, a proxy leg, and random records
(codes, tuple indices, hop counts and packet ids drawn at random). Real
records from the lab are compared in tests/e2e/test_journey_rows.py.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.unit.test_journey_records import REQ_TUPLES, REQUEST, hop, record, records
from tests.unit.test_native_text import hostile_ctx, module
from tests.unit.test_decode import CT_NS, ctx
from tracer import events, native_rows
from tracer.journey_block import journey_block
from tracer.journey_json import journey_json_block
from tracer.journey_records import journey_rows_numpy, journey_rows_of_records
from tracer.proxies import ProxyLink, ProxyLinks
from tracer.render import Summary
from tracer.render_rows import render_rows

V6_CLIENT, V6_HOST, V6_WEB = "fd00:198:18::2", "fd00:198:18::1", "fd00:172:17::2"


def kernel(recs: np.ndarray) -> np.ndarray:
    """Records as the drain hands them (the kernel's dtype, contiguous)."""
    return np.ascontiguousarray(recs.astype(events.JOURNEY_DTYPE))


def odd_records() -> np.ndarray:
    """records() and more: IPv6 through DNAT, a drop reason the kernel has
    no name for, a packet whose parts come in reverse order with the same
    first sighting as another packet, a hop pointing past its tuples, a
    record without hops, an unknown protocol."""
    v6 = [(V6_CLIENT, V6_HOST, 41000, 8000), (V6_CLIENT, V6_WEB, 41000, 8080)]
    more = [
        record(808, 10_000, REQUEST, v6, flow=9, direction=1),
        record(909, 60_000, REQUEST[:3] + [hop("drop", 7, 1)], REQ_TUPLES, end="drop", reason=77, drop_netns=0),
        record(111, 95_000, [hop("tc_ingress", 2, in_ct=True)], REQ_TUPLES[1:], new=False, flow=4, direction=2),
        record(111, 95_000, [hop("tc_ingress", 7), hop("nf_prerouting", 7, 3, BEFORE_)], REQ_TUPLES, flow=3),
        record(222, 95_000, [hop("tc_egress", 9, 1)], REQ_TUPLES, protocol=132),
        record(333, 99_000, [], REQ_TUPLES),
    ]
    return np.concatenate([records(), *more])


BEFORE_ = 1


def decoded(jr) -> dict:
    """Every value of the rows, by name (codes looked up in their values)."""
    out = {}
    for f in ("hook", "stage", "role", "drop_reason", "container", "ifname", "container_id", "protocol"):
        c = getattr(jr, f)
        out[f] = [c.values[i] for i in np.asarray(c.codes).tolist()]
    for f in ("packet_id", "flow_id", "direction", "verdict", "last_seen", "ktime", "dt", "tcp_flags", "length",
              "wall_ns", "netns", "tcp_seq", "tcp_doff", "starts", "rows"):
        out[f] = np.asarray(getattr(jr, f)).astype(np.int64).tolist()
    out["reason"] = [jr.drop_reason.values[i] for i in jr.reason.tolist()]
    out["container_of"] = [jr.container.values[i] for i in jr.container_of.tolist()]
    out["container_to"] = [jr.container.values[i] for i in jr.container_to.tolist()]
    for side, ips in (("src", jr.src_ip), ("dst", jr.dst_ip)):
        code, port, icmp = (np.asarray(a).astype(np.int64).tolist() for a in getattr(jr, side))
        out[side] = [(ips[c], p, i) for c, p, i in zip(code, port, icmp)]
    return out


def both(recs: np.ndarray, c):
    compiled = journey_rows_of_records(recs, c)
    reference = journey_rows_numpy(recs, c)
    return compiled, reference


def assert_same_outputs(compiled, reference, links=None) -> None:
    assert decoded(compiled) == decoded(reference)
    assert bytes(journey_json_block(compiled)[0]) == bytes(journey_json_block(reference)[0])
    for color in (False, True):
        assert bytes(render_rows(compiled, color)) == bytes(render_rows(reference, color))
    a, b = Summary(), Summary()
    a.add_table(compiled)
    b.add_table(reference)
    assert a.to_dict() == b.to_dict()
    for as_json in (True, False):
        blocks = [journey_block(jr, as_json, False, None, _links(links))[0] for jr in (compiled, reference)]
        assert bytes(blocks[0]) == bytes(blocks[1])


def _links(link):
    links = ProxyLinks()
    if link is not None:
        links.add_recorded(link)
    return links


def test_the_compiled_path_is_taken_for_the_kernels_records():
    module()
    recs = kernel(odd_records())
    assert native_rows.usable(recs)
    compiled, _ = both(recs, ctx())
    assert compiled.pair is None, "the compiled rows leave pairs to JourneyRows.pairs()"


@pytest.mark.parametrize("boot_offset_ns", [1_000, 1_796_000_000_123_456_789])
def test_same_rows_and_texts_as_numpy(boot_offset_ns):
    module()
    for c in (ctx(), hostile_ctx(boot_offset_ns)):
        c.boot_offset_ns = boot_offset_ns
        compiled, reference = both(kernel(odd_records()), c)
        assert len(compiled) == 11
        assert_same_outputs(compiled, reference)
        js = {j["packet_id"]: j for j in map(json.loads, bytes(journey_json_block(compiled)[0]).decode().splitlines())}
        assert js["328"]["hops"][0]["src"] == f"[{V6_CLIENT}]:41000"  # 808, IPv6
        assert js["38d"]["drop_reason"] == "REASON_77" and js["38d"]["verdict"] == "dropped"  # 909
        assert js["de"]["protocol"] == "132"  # 222: a protocol without a name
        assert "14d" not in js, "a record without hops is no journey"


def test_any_order_in_and_parts_out_of_order():
    module()
    recs = kernel(odd_records())
    for seed in range(8):  # ties (parts with one first sighting) broken by input order on both paths
        shuffled = np.ascontiguousarray(recs[np.random.default_rng(seed).permutation(len(recs))])
        compiled, reference = both(shuffled, ctx())
        assert_same_outputs(compiled, reference)
        assert [int(p) for p in compiled.packet_id[:3]] == [404, 101, 808], "by first sighting, ties by id"


def test_a_proxy_leg_is_annotated_the_same():
    module()
    # the request's client leg: client -> host:8000, relayed by a proxy to the container
    link = ProxyLink(3, 4321, (("198.18.0.2", 40000), ("198.18.0.1", 8000)),
                     (("172.17.0.1", 50000), ("172.17.0.2", 8080)), "web")
    compiled, reference = both(kernel(odd_records()), ctx())
    assert_same_outputs(compiled, reference, link)
    block = bytes(journey_block(compiled, True, False, None, _links(link))[0]).decode()
    assert '"proxy": {"link": 3' in block


def test_random_records_agree():
    """Random hooks, stages, flags, interfaces, tuple indices (past the
    used ones too), hop counts (0 to more than a record holds), packet ids
    with many parts, equal first sightings, any byte order of the ids."""
    module()
    rng = np.random.default_rng(9)
    c = hostile_ctx(5)
    addrs = [events.empty_journeys(1)["tuples"][0, 0]["saddr"]]  # all zero
    for n in (1, 2, 50, 700):
        recs = events.empty_journeys(n)
        recs["packet_id"] = rng.integers(1, max(2, n // 3), n, dtype=np.uint64) << np.uint64(rng.integers(0, 50))
        recs["first_ktime"] = rng.integers(0, 50, n) * 1000
        recs["flow_id"] = rng.choice([0, 5, 1 << 60], n)
        recs["direction"] = rng.integers(0, 3, n)
        recs["protocol"] = rng.choice([1, 6, 17, 58, 200], n)
        recs["tcp_flags"], recs["length"], recs["tcp_doff"] = rng.integers(0, 256, n), rng.integers(0, 1 << 16, n), 5
        recs["tcp_seq"] = rng.integers(0, 1 << 32, n, dtype=np.uint64)
        recs["drop_reason"] = rng.choice([0, 2, 12, 99], n)
        recs["drop_netns"] = rng.choice([0, CT_NS], n)
        recs["n_hops"] = rng.choice([0, 1, 3, 9, events.MAX_HOPS, 200], n)
        recs["n_tuples"] = rng.integers(0, events.MAX_TUPLES + 2, n)
        hops = recs["hops"]
        hops["dt_ns"] = rng.integers(0, 1 << 32, hops.shape, dtype=np.uint64)
        hops["ifindex"] = rng.choice([0, 2, 7, 9, 1 << 20], hops.shape)
        hooks = rng.integers(1, len(events.HOOKS), hops.shape)
        hops["code"] = hooks | rng.integers(0, 3, hops.shape) << events.HOP_STAGE_SHIFT \
            | rng.choice([0, events.HOP_IN_CT_BIT, 0x80], hops.shape)
        hops["tuple"] = rng.integers(0, 7, hops.shape)
        tuples = recs["tuples"]
        for side in ("saddr", "daddr"):
            pick = rng.integers(0, 4, tuples.shape)
            tuples[side] = np.stack([addrs[0], *(np.frombuffer(bytes(16 - 4) + bytes([i, 1, 2, 3]), np.uint8)
                                                 for i in (10, 20)), np.arange(16, dtype=np.uint8)])[pick]
        tuples["sport"], tuples["dport"] = rng.integers(0, 1 << 16, tuples.shape), rng.integers(0, 1 << 16, tuples.shape)
        recs["last_ktime"] = recs["first_ktime"] + rng.integers(0, 1 << 33, n)
        assert native_rows.usable(recs)
        if not recs["n_hops"].any():
            continue
        compiled, reference = both(recs, c)
        assert_same_outputs(compiled, reference)


def test_other_dtypes_and_no_hops_take_the_numpy_path():
    module()
    recs = odd_records()  # np.concatenate made its fields native-endian: not the kernel's dtype
    assert not native_rows.usable(recs)
    assert decoded(journey_rows_of_records(recs, ctx())) == decoded(journey_rows_numpy(kernel(recs), ctx()))
    empty = kernel(odd_records())[-1:]  # the record without hops
    assert len(journey_rows_of_records(empty, ctx())) == 0
    assert len(journey_rows_of_records(kernel(odd_records())[:0], ctx())) == 0


def test_bad_arguments_are_errors_not_crashes():
    m = module()
    recs = kernel(odd_records())
    raw = recs.view(np.uint8).reshape(-1)
    n, hops = len(recs), int(np.minimum(recs["n_hops"], events.MAX_HOPS).sum())
    kept = int(np.count_nonzero(recs["n_hops"]))

    def cols(k, h, extra=1):
        ids = np.zeros((2, k), np.uint64)  # packet_id, flow_id
        return (*ids, *np.zeros((7, k), np.int64), np.zeros(k + extra, np.int64)), tuple(np.zeros((11, h), np.int64))

    with pytest.raises(ValueError, match="column"):
        m.journey_hops(raw, native_rows.LAYOUT, native_rows._ICMP, 0, *cols(kept, hops - 1))
    with pytest.raises(ValueError, match="column"):
        m.journey_hops(raw, native_rows.LAYOUT, native_rows._ICMP, 0, *cols(kept, hops, extra=0))
    with pytest.raises(ValueError, match="do not fit"):
        m.journey_hops(raw[:-1], native_rows.LAYOUT, native_rows._ICMP, 0, *cols(kept, hops))
    huge = list(native_rows.LAYOUT)
    huge[1] = 1 << 62  # packet_id far past the record
    with pytest.raises(ValueError, match="outside"):
        m.journey_hops(raw, tuple(huge), native_rows._ICMP, 0, *cols(kept, hops))
    with pytest.raises(ValueError, match="icmp"):
        m.journey_hops(raw, native_rows.LAYOUT, b"\0", 0, *cols(kept, hops))
    with pytest.raises(TypeError):
        m.journey_hops(raw, native_rows.LAYOUT[:-1], native_rows._ICMP, 0, *cols(kept, hops))
    with pytest.raises(TypeError, match="int64"):  # 4-byte items: another type (parts.c load_column), refused
        m.journey_hops(raw, native_rows.LAYOUT, native_rows._ICMP, 0, *cols(kept, hops)[:1],
                       tuple(np.zeros((11, hops), np.int32)))
    assert n > kept  # one record without hops, skipped

    # journey_facts: codes past their tables are refused before any is used as an index
    compiled = journey_rows_of_records(recs, ctx())
    h, p = len(compiled.dt), len(compiled)

    def facts(hook=None, place=None, reason=None, sizes=(10, 4, 1, 8, 0, 0), starts=None):
        hops = (compiled.hook.codes.copy() if hook is None else hook, compiled.stage.codes.copy(),
                np.zeros(h, np.int64) if place is None else place, np.full(h, -1, np.int64) if reason is None else reason)
        return m.journey_facts(hops, compiled.starts if starts is None else starts, (np.zeros(1, np.int64),) * 5,
                               np.zeros(10 * 4 * 1, np.int64), sizes, (np.ones(1, np.int64), np.zeros(1, np.int64)) * 2,
                               tuple(np.zeros((5, h), np.int64)), tuple(np.zeros((5, p), np.int64)))

    facts()
    with pytest.raises(ValueError, match="out of range"):
        facts(hook=np.full(h, 10, np.int64))
    with pytest.raises(ValueError, match="out of range"):
        facts(place=np.ones(h, np.int64))
    with pytest.raises(ValueError, match="drop reason"):
        facts(reason=np.zeros(h, np.int64))
    with pytest.raises(ValueError, match="do not fit"):
        facts(sizes=(11, 4, 1, 8, 0, 0))
    starts = compiled.starts.copy()
    starts[-1] += 1
    with pytest.raises(ValueError, match="do not fit"):
        facts(starts=starts)
    with pytest.raises(TypeError, match="64-bit"):
        facts(place=np.zeros(h, np.int32))


# --- the summary's hop segments (native/segments.c, render.Summary) ----------


def samples(summary: Summary) -> dict:
    return {key: (s.count, list(s.values)) for key, s in summary._segments.items()}


@pytest.mark.parametrize("cap", [100_000, 7])
def test_segments_grouped_compiled_equal_numpys(cap):
    """Same segments in the same order, same samples in the same order,
    also past the reservoir's cap (each segment's own random draws)."""
    module()
    recs = kernel(odd_records())
    for c in (ctx(), hostile_ctx(5)):
        a, b = Summary(cap, compiled=True), Summary(cap, compiled=False)
        for seed in range(6):
            batch = np.ascontiguousarray(recs[np.random.default_rng(seed).permutation(len(recs))])
            for jr in both(batch, c):
                a.add_table(jr)
                b.add_table(jr)
        assert samples(a) == samples(b) and a.to_dict() == b.to_dict()
        assert len(a._segments) > 5


def test_segment_groups_bad_arguments_are_errors_not_crashes():
    m = module()
    jr = journey_rows_of_records(kernel(odd_records()), ctx())
    h, p = len(jr.dt), len(jr)
    label_of = np.zeros(len(jr.hook.values) * len(jr.stage.values) * len(jr.role.values), np.int64)

    def groups(hook=None, label=label_of, n_labels=1, out=None, starts=None):
        return m.segment_groups(jr.hook.codes if hook is None else hook, jr.stage.codes, jr.role.codes,
                                jr.starts if starts is None else starts, jr.ktime, label, len(jr.stage.values),
                                len(jr.role.values), n_labels, np.zeros(h - p, np.int64) if out is None else out)

    ids, counts = groups()
    assert ids == [0] and counts == [h - p]
    with pytest.raises(ValueError, match="out of range"):
        groups(hook=np.full(h, len(jr.hook.values), np.int64))
    with pytest.raises(ValueError, match="label"):
        groups(label=label_of + 1)
    with pytest.raises(ValueError, match="do not fit"):
        groups(out=np.zeros(h, np.int64))
    starts = jr.starts.copy()
    starts[1] = starts[2]
    with pytest.raises(ValueError, match="a hop, in order"):
        groups(starts=starts)
    with pytest.raises(TypeError, match="64-bit"):
        groups(hook=jr.hook.codes.astype(np.int32))


def test_segment_groups_refuse_aliased_outputs_and_huge_sizes():
    m = module()
    jr = journey_rows_of_records(kernel(odd_records()), ctx())
    h, p = len(jr.dt), len(jr)
    label_of = np.zeros(len(jr.hook.values) * len(jr.stage.values) * len(jr.role.values), np.int64)
    ktime = np.concatenate([jr.ktime, np.zeros(max(0, (h - p) - h), np.int64)])
    with pytest.raises(ValueError, match="overlaps"):  # durations written over the times it reads
        m.segment_groups(jr.hook.codes, jr.stage.codes, jr.role.codes, jr.starts, ktime, label_of,
                         len(jr.stage.values), len(jr.role.values), 1, ktime[: h - p])
    with pytest.raises(ValueError, match="out of range"):  # the combination's index would wrap
        m.segment_groups(np.full(h, 1 << 40, np.int64), jr.stage.codes, jr.role.codes, jr.starts, jr.ktime, label_of,
                         1 << 20, 1 << 20, 1, np.zeros(h - p, np.int64))


def test_numbers_and_many_netns_written_as_the_python_path():
    """The compiled JSON writer formats integers two digits a step and keeps
    each hop's netns text in a 16-slot cache: hundreds of distinct netns
    (slots shared, replaced back and forth), 1 to 20 digits, negative dt,
    the int64 extremes, give the Python path's bytes."""
    module()
    rng = np.random.default_rng(10)
    jr, _ = both(kernel(odd_records()), ctx())
    n = len(jr.rows)
    edge = np.array([0, 1, 9, 10, 99, 100, 101, 4026531840, 4026532097, (1 << 63) - 1, 10**18, 10**19 // 10], np.int64)
    for trial in range(40):
        netns = rng.choice(np.concatenate([edge, rng.integers(0, 1 << 32, 300)]), n)
        if trial % 2:
            netns = np.where(rng.random(n) < 0.5, netns, 4026531840)  # one value interleaved with many
        dt = rng.choice(np.concatenate([edge, -edge, [np.iinfo(np.int64).min], rng.integers(-(1 << 40), 1 << 40, 50)]), n)
        ktime = rng.choice(np.concatenate([edge, rng.integers(0, 1 << 62, 50)]), n)
        jr.netns, jr.dt, jr.ktime = netns.astype(np.int64), dt.astype(np.int64), ktime.astype(np.int64)
        assert bytes(journey_json_block(jr)[0]) == bytes(journey_json_block(jr, compiled=False)[0])

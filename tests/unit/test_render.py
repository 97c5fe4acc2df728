"""Human output: journey blocks, status line, summary (plain text unless noted)."""

from __future__ import annotations

import pytest

from tests.unit.test_journeys import (
    CLIENT, CONTAINER, HOST, dropped_request, events, inbound_reply, inbound_request, masquerade_out,
)
from tracer.journeys import Hop, Journey, build_journeys
from tracer.render import Summary, format_dt, render_journey, short_id, status_line


def _one(rows) -> Journey:
    (j,) = build_journeys(events(rows))
    return j


def test_inbound_block_reads_like_the_path():
    text = render_journey(_one(inbound_request()), color=False)
    lines = text.splitlines()
    assert len(lines) == 1 + 9
    header = lines[0]
    assert header.startswith("- #1 tcp S ")  # no wall clock in these rows: the time of day is "-"
    assert f"{CLIENT}:40000 → {HOST}:8000" in header
    assert "original" in header and "flow ffff888012345600" in header and "[web]" in header
    assert header.endswith("delivered")
    assert "+0.0µs" in lines[1] and "tc_ingress" in lines[1] and "veth-lab-h" in lines[1]
    dnat = next(line for line in lines if "nf_prerouting/after" in line)
    assert dnat.rstrip().endswith(f"{CLIENT}:40000 → {CONTAINER}:8080  DNAT")
    assert sum("DNAT" in line for line in lines) == 1  # only where the address first changes
    assert "nf_postrouting/before" in text and "tc_egress" in text
    last = lines[-1]
    assert "+20.0µs" in last and "tc_ingress" in last and "eth0" in last and "web" in last
    assert "\x1b[" not in text


def test_reply_block_shows_reverse_dnat():
    text = render_journey(_one(inbound_reply()), color=False)
    line = next(x for x in text.splitlines() if "nf_postrouting/after" in x)
    assert line.rstrip().endswith(f"{HOST}:8000 → {CLIENT}:40000  reverse DNAT")
    assert "tcp SA" in text.splitlines()[0] and "reply" in text.splitlines()[0]


def test_masquerade_block_shows_snat():
    text = render_journey(_one(masquerade_out()), color=False)
    assert f"{HOST}:45000 → {CLIENT}:9000  SNAT" in text


def test_drop_block_names_reason_and_last_hook_in_red():
    j = _one(dropped_request())
    plain = render_journey(j, color=False)
    assert plain.splitlines()[0].endswith("dropped NETFILTER_DROP")
    last = plain.splitlines()[-1]
    assert "drop" in last and "NETFILTER_DROP (last seen nf_forward)" in last
    colored = render_journey(j, color=True)
    assert "\x1b[31m" in colored  # red
    assert "\x1b[" in next(x for x in colored.splitlines() if "DNAT" in x)


def test_icmp_block_has_no_ports():
    rows = [
        {"packet_id": 7, "ktime_ns": 10, "hook": "tc_ingress", "ifname": "veth-lab-h", "if_role": "external",
         "protocol": "icmp", "tcp_flags": 0, "src_ip": CLIENT, "dst_ip": HOST, "src_port": 3, "dst_port": 1},
    ]
    header = render_journey(_one(rows), color=False).splitlines()[0]
    assert header.startswith("- #7 icmp ") and f"{CLIENT} → {HOST}" in header
    assert "flow -" in header and "unknown" in header


def test_small_formatters():
    assert format_dt(0) == "+0.0µs"
    assert format_dt(12_345) == "+12.3µs"
    assert format_dt(2_500_000) == "+2.50ms"
    assert format_dt(3_000_000_000) == "+3.00s"
    # the whole id (tracer/ids.py): ids that share their last digits stay apart on screen
    assert short_id(None) == "-" and short_id(0xABCDEF123) == "abcdef123" and short_id(5) == "5"
    assert short_id((1 << 40) | 1) != short_id((2 << 40) | 1)
    assert status_line(12_345.0, 3, 42) == "12.3k events/s  3 lost  42 packets"
    assert status_line(5.0, 0, 0) == "5 events/s  0 lost  0 packets"


def _journey(pid: int, times: list[int], labels: list[tuple[str, str | None, str | None]], **kw) -> Journey:
    hops = [
        Hop(hook, stage, "if", role, 0, None, "a:1", "b:2", t, t - times[0], kw.get("drop_reason") if hook == "drop" else None)
        for t, (hook, stage, role) in zip(times, labels)
    ]
    fields = dict(packet_id=pid, flow_id=kw.get("flow", 0x100), direction="original", protocol="tcp",
                  tcp_flags="S", length=60, container=None, verdict=kw.get("verdict", "delivered"),
                  drop_reason=kw.get("drop_reason"), hops=hops,
                  last_seen=hops[-2] if kw.get("verdict") == "dropped" else None)
    return Journey(**fields)


PATH = [("nf_prerouting", "after", None), ("tc_egress", None, "bridge"), ("tc_ingress", None, "container")]


def test_summary_medians_counts_and_drops():
    s = Summary()
    s.add([
        _journey(1, [0, 1_000, 5_000], PATH, flow=1),
        _journey(2, [0, 3_000, 4_000], PATH, flow=1),
        _journey(3, [0, 2_000, 12_000], PATH, flow=2),
    ])
    s.add([
        _journey(4, [0, 8_000, 9_000], PATH, flow=2),  # 4th sample: even count -> mean of the middle two
        _journey(5, [0, 500], [("nf_forward", None, None), ("drop", None, None)], flow=3,
                 verdict="dropped", drop_reason="NETFILTER_DROP"),
        _journey(6, [0], [("tc_egress", None, "bridge")], flow=0, verdict="unknown"),
    ])
    s.set_lost({"tc": 0, "netfilter": 3}, {"tc": 1000, "netfilter": 297})
    d = s.to_dict()
    assert d["packets"] == 6 and d["flows"] == 3
    assert d["verdicts"] == {"delivered": 4, "dropped": 1, "unknown": 1}
    assert d["drops"] == [{"reason": "NETFILTER_DROP", "last_seen": "nf_forward", "place": "nf_forward", "packets": 1}]
    assert d["lost_events"] == {"tc": {"lost": 0, "events": 1000}, "netfilter": {"lost": 3, "events": 297}}
    segs = {x["segment"]: (x["count"], x["p50_us"]) for x in d["segments"]}
    # 1000, 3000, 2000, 8000 -> 2.5 µs; 4000, 1000, 10000, 1000 -> 2.5 µs
    assert segs == {
        "nf_prerouting/after → tc_egress@bridge": (4, 2.5),
        "tc_egress@bridge → tc_ingress@container": (4, 2.5),
        "nf_forward → drop": (1, 0.5),
    }
    text = s.render(color=False)
    assert "6 packets  3 flows  4 delivered  1 dropped  1 unknown" in text
    assert "NETFILTER_DROP ×1  last seen nf_forward" in text
    assert "lost events: 3 of 1,300 (netfilter 3 of 300, 1.00%)" in text
    assert "nf_prerouting/after → tc_egress@bridge" in text and "2.5µs" in text
    assert "\x1b[" not in text


def test_summary_reservoir_keeps_memory_bounded():
    s = Summary(sample_cap=100)
    s.add([_journey(i, [0, i], PATH[:2]) for i in range(1, 1001)])
    (seg,) = s.segments()
    assert seg["count"] == 1000
    assert len(s._segments[seg["segment"]].values) == 100
    assert 0.2 < seg["p50_us"] < 0.8  # true median 0.5 µs


@pytest.mark.parametrize("compiled", [True, False])
def test_reservoir_batches_keep_the_samples_of_one_at_a_time(compiled):
    """add_many (Summary.add_table's path: past the cap by tracer._native's
    in-order fill, or numpy's) keeps exactly the samples that adding the
    values one by one keeps: the same draws, a later value winning a slot
    drawn twice (a cap of 50 against 5,000 values: many such slots), batches
    that cross the cap, empty ones."""
    import numpy as np

    from tracer import native
    from tracer.render import _Samples

    if compiled:
        assert native.native() is not None, native.why_not()
    values = np.random.default_rng(7).integers(-10**12, 10**12, 5000)
    one, many = _Samples(50, 3), _Samples(50, 3, compiled=compiled)
    for v in values.tolist():
        one.add(v)
    at = 0
    for size in (0, 7, 30, 13, 0, 1, 400, 2000, 2549):
        many.add_many(values[at:at + size])
        at += size
    assert at == len(values) and many.count == one.count == 5000
    assert many.values.tolist() == one.values.tolist() and len(many.values) == 50
    assert many.median_ns() == one.median_ns()


def test_reservoir_draw_checks_its_arrays():
    import numpy as np

    from tracer import native

    m = native.native()
    assert m is not None, native.why_not()
    samples = np.zeros(4, np.int64)
    # values 7th to 11th: slots int(u * 7) .. int(u * 11)
    uniforms = np.array([1 / 7 + 1e-9, 0.99, 0.0, 0.1, 3 / 11 + 1e-9])
    m.reservoir_draw(samples, uniforms, np.array([5, 6, 7, 8, 9]), 6)
    # slots 1 (5), 7 (6: past the cap, left out), 0 (7), 1 again (8: the later wins), 3 (9)
    assert samples.tolist() == [7, 8, 0, 9]
    with pytest.raises(ValueError, match="differ in length"):
        m.reservoir_draw(samples, np.array([0.5, 0.5]), np.array([1]), 6)
    with pytest.raises(ValueError, match="overlaps"):
        m.reservoir_draw(samples, np.array([0.5, 0.5]), samples[:2], 6)
    with pytest.raises(TypeError, match="float64"):
        m.reservoir_draw(samples, np.array([1, 2]), np.array([1, 2]), 6)
    with pytest.raises(TypeError, match="64-bit"):
        m.reservoir_draw(samples, np.array([0.5]), np.array([1.0]), 6)
    with pytest.raises(ValueError, match="seen"):
        m.reservoir_draw(samples, np.array([0.5]), np.array([1]), -1)
    assert samples.tolist() == [7, 8, 0, 9]  # refused calls wrote nothing


def test_empty_summary_renders():
    text = Summary().render(color=True)
    assert "0 packets" in text and "not reported" in text
    s = Summary()
    s.set_lost({"tc": 0}, {"tc": 10})
    assert "lost events: 0 of 10" in s.render(color=False)


def test_column_wise_dt_text_is_format_dt():
    """render_rows rounds on integers: the same text as format_dt's floats,
    half-way and negative values included."""
    import numpy as np

    from tracer.render_rows import _dt_texts

    rng = np.random.default_rng(3)
    values = np.concatenate([
        np.array([-500, -1, 0, 49, 50, 150, 12_350, 999_950, 999_960, 999_999, 1_000_000, 1_234_567, 999_995_000,
                  1_000_000_000, 3_456_789_012]),
        rng.integers(0, 2_000_000_000, 20_000),
        rng.integers(0, 1_000_000, 20_000) // 50 * 50,  # many exact halves
    ])
    texts, index = _dt_texts(values)
    assert [texts[i] for i in index.tolist()] == [format_dt(int(v)) for v in values.tolist()]


def test_one_units_helper_for_durations():
    from tracer.render import _us as stats_us
    from tracer.render import latency_cell as latency_us
    from tracer.units import duration_text, micros_text

    assert [latency_us(v) for v in (None, 999_949, 1_000_000, 2_500_000_000)] == ["-", "999.9µs", "1.00ms", "2500.00ms"]
    assert duration_text(2_500_000_000) == "2.50s" and format_dt(2_500_000_000) == "+2.50s"
    assert [stats_us(v) for v in (None, 1_234_567)] == ["-", "1,234.6"] and micros_text(500) == "0.5"

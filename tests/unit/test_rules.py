"""Rule attribution's pure parts (no root): the trace message parser, the
ruleset model and iptables positions, the backend detection, our table's
rules and leftovers, hit resolution, the join to journey records, and the
rules on hops in text and JSON."""

from __future__ import annotations

import json
import socket
import struct

import numpy as np

from tracer import events
from tracer.kernel import nft_table, nft_trace, ruleset
from tracer.rule_join import LATE_NS, WAIT_NS, RuleJoiner
from tracer.rule_render import RuleBook, hop_rules, rule_line, with_rules_json, with_rules_text
from tracer.rule_trace import HitResolver, RuleHit, packet_facts


def _nla(kind: int, payload: bytes) -> bytes:
    raw = struct.pack("=HH", 4 + len(payload), kind) + payload
    return raw + b"\0" * (-len(raw) % 4)


def _ip(src="198.18.0.2", dst="198.18.0.1", ip_id=0x1234, length=60, proto=6) -> bytes:
    return struct.pack(">BBHHHBBH4s4s", 0x45, 0, length, ip_id, 0x4000, 64, proto, 0,
                       socket.inet_aton(src), socket.inet_aton(dst))


def _tcp(sport=40000, dport=8000, seq=1000, ack=0, flags=0x02) -> bytes:
    return struct.pack(">HHIIBBHHH", sport, dport, seq, ack, 0x50, flags, 64240, 0, 0)


def _trace_msg(table="nat", chain="PREROUTING", handle=359, kind=3, verdict=-3, target="DOCKER", trace_id=7,
               network=None, transport=None, family=2, iif=294, policy=None) -> bytes:
    attrs = _nla(nft_trace.A_TABLE, table.encode() + b"\0") + _nla(nft_trace.A_CHAIN, chain.encode() + b"\0")
    if handle:
        attrs += _nla(nft_trace.A_RULE_HANDLE, struct.pack(">Q", handle))
    attrs += _nla(nft_trace.A_TYPE, struct.pack(">I", kind))
    if verdict is not None:
        v = _nla(nft_trace.NFTA_VERDICT_CODE, struct.pack(">i", verdict))
        if target:
            v += _nla(nft_trace.NFTA_VERDICT_CHAIN, target.encode() + b"\0")
        attrs += _nla(nft_trace.A_VERDICT | 0x8000, v)  # NLA_F_NESTED
    attrs += _nla(nft_trace.A_ID, struct.pack(">I", trace_id))
    if policy is not None:
        attrs += _nla(nft_trace.A_POLICY, struct.pack(">I", policy))
    if network is not None:
        attrs += _nla(nft_trace.A_NETWORK_HEADER, network) + _nla(nft_trace.A_TRANSPORT_HEADER, transport or b"")
        attrs += _nla(nft_trace.A_IIF, struct.pack(">I", iif))
    body = struct.pack("=BBH", family, 0, 0) + attrs
    return struct.pack("=IHHII", 16 + len(body), nft_trace.MSG_TRACE, 0, 0, 0) + body


def test_parse_trace_messages_and_generations():
    newgen = struct.pack("=IHHII", 20, nft_trace.MSG_NEWGEN, 0, 0, 0) + b"\0" * 4
    buf = _trace_msg(network=_ip(), transport=_tcp()) + newgen + _trace_msg(chain="DOCKER", handle=363, verdict=1, target=None)
    items = nft_trace.parse_messages(buf, ktime=5)
    assert items[1] is nft_trace.NEW_GENERATION
    first, second = items[0], items[2]
    assert (first.table, first.chain, first.handle, first.type, first.verdict, first.target) == ("nat", "PREROUTING", 359, "rule", "jump", "DOCKER")
    assert first.iif == 294 and first.trace_id == 7 and first.network == _ip() and first.ktime == 5
    assert (second.chain, second.verdict, second.target, second.network) == ("DOCKER", "accept", None, b"")


def test_packet_facts_are_the_kernel_fingerprint():
    key, saddr, daddr, sport, dport = packet_facts(_ip(), _tcp(seq=77, ack=88))
    assert key == (6, 0x1234, 60, 77, 88)
    assert saddr == 0xC6120002 and daddr == 0xC6120001 and (sport, dport) == (40000, 8000)
    udp = struct.pack(">HHHH", 5353, 53, 40, 0) + b"\0" * 12
    assert packet_facts(_ip(proto=17), udp)[0] == (17, 0x1234, 60, 40, 0)
    assert packet_facts(b"\x60" + b"\0" * 39, b"") is None  # IPv6: not ours


NFT_JSON = [
    {"table": {"family": "ip", "name": "filter", "handle": 2}},
    {"chain": {"family": "ip", "table": "filter", "name": "FORWARD", "handle": 1, "type": "filter", "hook": "forward", "prio": 0, "policy": "accept"}},
    {"chain": {"family": "ip", "table": "filter", "name": "DOCKER-USER", "handle": 3}},
    {"rule": {"family": "ip", "table": "filter", "chain": "FORWARD", "handle": 387, "expr": []}},
    {"rule": {"family": "ip", "table": "filter", "chain": "FORWARD", "handle": 381, "expr": []}},
    {"rule": {"family": "ip", "table": "filter", "chain": "DOCKER-USER", "handle": 412, "expr": []}},
    {"rule": {"family": "ip", "table": "filter", "chain": "DOCKER-USER", "handle": 7, "expr": []}},
    {"table": {"family": "inet", "name": "mine", "handle": 9}},
    {"chain": {"family": "inet", "table": "mine", "name": "in", "handle": 1, "type": "filter", "hook": "input", "prio": 0, "policy": "drop"}},
    {"rule": {"family": "inet", "table": "mine", "chain": "in", "handle": 4, "expr": []}},
]
NFT_TEXT = """table ip filter {
\tchain FORWARD { # handle 1
\t\ttype filter hook forward priority filter; policy accept;
\t\tcounter jump DOCKER-USER # handle 387
\t\tiifname "docker0" oifname != "docker0" counter accept # handle 381
\t}
\tchain DOCKER-USER { # handle 3
\t\tip saddr 198.18.0.2 counter drop # handle 412
\t\tcounter return # handle 7
\t}
}
table inet mine { # handle 9
\tchain in { # handle 1
\t\ttype filter hook input priority filter; policy drop;
\t\ttcp dport 22 accept # handle 4
\t}
}
"""
SAVE = """# Generated by iptables-save v1.8.9 (nf_tables)
*filter
:FORWARD ACCEPT [0:0]
:DOCKER-USER - [0:0]
-A FORWARD -j DOCKER-USER
-A FORWARD -i docker0 ! -o docker0 -j ACCEPT
-A DOCKER-USER -s 198.18.0.2/32 -j DROP
-A DOCKER-USER -j RETURN
COMMIT
"""


def test_ruleset_positions_and_texts():
    rs = ruleset.build(NFT_JSON, NFT_TEXT, SAVE)
    drop = rs.rule("ip", "filter", 412)
    assert (drop.chain, drop.position, drop.iptables) == ("DOCKER-USER", 1, "-A DOCKER-USER -s 198.18.0.2/32 -j DROP")
    assert drop.nft == "ip saddr 198.18.0.2 counter drop"
    assert rs.rule("ip", "filter", 7).position == 2
    assert rs.rule("ip", "filter", 381).iptables == "-A FORWARD -i docker0 ! -o docker0 -j ACCEPT"
    mine = rs.rule("inet", "mine", 4)
    assert mine.iptables is None and mine.nft == "tcp dport 22 accept" and mine.position == 1
    assert rs.chain("ip", "filter", "FORWARD").hook == "forward"


def test_ruleset_chain_edited_with_nft_gets_no_iptables_text():
    extra = NFT_JSON + [{"rule": {"family": "ip", "table": "filter", "chain": "DOCKER-USER", "handle": 500, "expr": []}}]
    rs = ruleset.build(extra, NFT_TEXT, SAVE)
    assert rs.rule("ip", "filter", 412).iptables is None  # 3 rules in nf_tables, 2 lines in iptables-save
    assert rs.rule("ip", "filter", 387).iptables == "-A FORWARD -j DOCKER-USER"


def test_iptables_backend_detection():
    assert ruleset.iptables_backend("iptables v1.8.9 (nf_tables)") == "nf_tables"
    assert ruleset.iptables_backend("iptables v1.8.7 (legacy)") == "legacy"
    assert ruleset.iptables_backend("iptables v1.6.1") == "legacy"
    assert ruleset.iptables_backend("") is None
    assert ruleset.legacy_rules_present("filter\nnat\n") and not ruleset.legacy_rules_present("")


def test_our_table_marks_the_filter_on_every_view():
    m = nft_table.Match(ports=(8000,), proto="tcp")
    assert m.rules("packet") == ["meta nfproto ipv4 meta l4proto tcp th sport 8000",
                                 "meta nfproto ipv4 meta l4proto tcp th dport 8000"]
    reply = nft_table.Match(ports=(8000, 9000)).rules("ct reply")
    assert reply[1] == "meta nfproto ipv4 ct state != untracked meta l4proto { tcp, udp } ct reply proto-dst { 8000, 9000 }"
    both = nft_table.Match(ports=(1,), hosts=("10.0.0.1",), container_addrs=("172.17.0.2",), container_ports=(8000,))
    assert len(both.rules("packet")) == 2 * 2 * 4  # AND across options, either end within each
    assert nft_table.Match().rules("packet") == ["meta nfproto ipv4"]  # everything traced: everything marked
    t = nft_table.TraceTable(m, nft=object(), pid=4242)
    script = t.script()
    assert script.startswith("table inet tracer_4242 {") and script.count("meta nftrace set 1") == 2 * (2 + 4)
    assert "hook prerouting priority -350" in script and "hook output priority -199" in script


def test_leftover_tables_are_told_by_pid_and_start_time():
    alive = {100: 555}.get
    assert nft_table.is_leftover("tracer_100", "tracer pid 100 start 554", alive)  # pid reused
    assert not nft_table.is_leftover("tracer_100", "tracer pid 100 start 555", alive)  # running
    assert nft_table.is_leftover("tracer_101", "tracer pid 101 start 9", alive)  # gone
    assert not nft_table.is_leftover("tracer_101", "", alive)  # not made by us: left alone
    assert not nft_table.is_leftover("tracer_102", "tracer pid 101 start 9", alive)


class _Event:
    pass


def _resolver(loads):
    calls = []

    def load():
        calls.append(1)
        return loads[min(len(calls) - 1, len(loads) - 1)]

    return HitResolver(load, ("inet", "tracer_1")), calls


def test_resolver_carries_headers_and_hook_to_jumped_chains_and_rereads_after_commits():
    rs = ruleset.build(NFT_JSON, NFT_TEXT, SAVE)
    inserted = [{"rule": {"family": "ip", "table": "filter", "chain": "DOCKER-USER", "handle": 600, "expr": []}}]
    rs2 = ruleset.build(NFT_JSON[:5] + inserted + NFT_JSON[5:], NFT_TEXT,
                        SAVE.replace("-A DOCKER-USER -s", "-A DOCKER-USER -p udp -j DROP\n-A DOCKER-USER -s"))
    res, calls = _resolver([rs, rs2])
    net, tr = _ip(), _tcp()
    buf = (_trace_msg(table="tracer_1", chain="early_prerouting", handle=5, verdict=-1, target=None, family=1,
                      network=net, transport=tr)
           + _trace_msg(table="tracer_77", chain="ct_prerouting", handle=3, verdict=-1, target=None, family=1,
                        network=net, transport=tr)  # another tracer's marking table: not a rule of the host
           + _trace_msg(chain="FORWARD", table="filter", handle=387, verdict=-3, target="DOCKER-USER", network=net, transport=tr)
           + _trace_msg(chain="DOCKER-USER", table="filter", handle=7, verdict=-5, target=None)
           + _trace_msg(chain="DOCKER-USER", table="filter", handle=0, verdict=-1, target=None))
    hits = res.feed(nft_trace.parse_messages(buf, ktime=10))
    assert [(h.hook, h.rule["chain"], h.rule["position"], h.rule["verdict"]) for h in hits] == [
        ("nf_forward", "FORWARD", 1, "jump"), ("nf_forward", "DOCKER-USER", 2, "return")]
    assert hits[1].key == (6, 0x1234, 60, 1000, 0) and hits[0].rule["target"] == "DOCKER-USER"
    # a commit inserted a rule at the top of DOCKER-USER: RETURN is now #3
    newgen = struct.pack("=IHHII", 20, nft_trace.MSG_NEWGEN, 0, 0, 0) + b"\0" * 4
    buf = newgen + _trace_msg(chain="FORWARD", table="filter", handle=387, verdict=-3, target="DOCKER-USER",
                              network=net, transport=tr) + _trace_msg(chain="DOCKER-USER", table="filter", handle=7, verdict=-5, target=None)
    hits = res.feed(nft_trace.parse_messages(buf, ktime=11))
    assert hits[1].rule["position"] == 3 and len(calls) == 2


def _v4(value: int) -> np.ndarray:
    """An IPv4 address (as an integer) as the kernel records it: IPv4-mapped IPv6."""
    return np.frombuffer(b"\0" * 10 + b"\xff\xff" + value.to_bytes(4, "big"), np.uint8)


def _record(pid, first, last, ip_id=0x1234, seq=1000, tuples=((0xC6120002, 0xC6120001, 40000, 8000),)):
    r = events.empty_journeys(1)
    r["packet_id"], r["first_ktime"], r["last_ktime"] = pid, first, last
    r["protocol"], r["ip_id"], r["length"], r["tcp_seq"] = 6, ip_id, 60, seq
    r["n_tuples"] = len(tuples)
    for i, (s, d, sp, dp) in enumerate(tuples):
        r["tuples"]["saddr"][0, i], r["tuples"]["daddr"][0, i] = _v4(s), _v4(d)
        r["tuples"]["sport"][0, i], r["tuples"]["dport"][0, i] = sp, dp
    return r


def _hit(ktime, hook="nf_forward", saddr=0xC6120002, daddr=0xAC110002, dport=8080, ip_id=0x1234, info=None):
    return RuleHit(ktime, hook, (6, ip_id, 60, 1000, 0), saddr, daddr, 40000, dport, info or {"chain": "X"})


def test_join_by_fingerprint_addresses_and_time():
    j = RuleJoiner()
    hit = _hit(2_000_000)
    j.add_hits([hit, _hit(2_000_000, ip_id=9)])
    assert j.match(2_000_000) == []  # its journey is not here yet: it waits
    nat = ((0xC6120002, 0xC6120001, 40000, 8000), (0xC6120002, 0xAC110002, 40000, 8080))
    j.add_records(np.concatenate([_record(5, 1_000_000, 1_100_000, tuples=nat),
                                  _record(6, 1_000_000, 1_100_000, tuples=((1, 2, 3, 4),))]))
    assert j.match(2_100_000) == [(5, hit)]  # same fingerprint, the addresses after DNAT fit packet 5 only
    assert j.match(2_000_000 + WAIT_NS + 1) == [] and j.unmatched == 1  # the other waited long enough
    # too early for a journey: a hit read before the packet's first sighting
    t = 3 * WAIT_NS
    j.add_records(_record(7, t, t + 100_000, ip_id=0x777, tuples=nat))
    j.add_hits([_hit(t - 1_000_000_000, ip_id=0x777)])
    assert j.match(t) == []
    # read late (a lagging reader), still within LATE_NS: joined
    late = _hit(t + LATE_NS - 1, ip_id=0x777)
    j.add_hits([late])
    assert j.match(t + LATE_NS) == [(7, late)]
    assert j.flush() == [] and j.unmatched == 2


def _rows():
    from tests.unit.test_journey_records import both, records  # real-shaped journey records

    return both(records())[0]


def test_rules_on_hops_text_and_json():
    from tracer.journey_json import journey_json_block
    from tracer.render_rows import render_rows

    jr = _rows()
    j = jr.packet_id.tolist().index(101)  # the request through DNAT
    pid = 101
    hooks = [jr.hook.values[c] for c in jr.hook.codes[jr.starts[j]:jr.starts[j + 1]]]
    nf = [h for h in hooks if h.startswith("nf_")]
    assert nf, hooks
    info = {"family": "ip", "table": "filter", "chain": "DOCKER-USER", "type": "rule", "position": 1, "handle": 412,
            "verdict": "drop", "target": None, "iptables": "-A DOCKER-USER -s 198.18.0.2/32 -j DROP", "nft": "drop"}
    book = RuleBook()
    book.add([(pid, nf[0], info), (pid, "nf_nowhere", dict(info, verdict="accept"))])
    per_hop = hop_rules(jr, book.pop(jr.packet_id.tolist()))
    s0 = int(jr.starts[j])
    at = s0 + hooks.index(nf[0]) + len([h for h in hooks if h == nf[0]]) - 1  # the hook's last hop
    assert per_hop[at] == [info]
    fallback = s0 + max(i for i, h in enumerate(hooks) if h != "drop")  # no hop at that hook: the last before a drop
    assert per_hop[fallback] == [dict(info, verdict="accept", at_hook="nf_nowhere")]
    text = with_rules_text(render_rows(jr, False), jr, per_hop, False).decode()
    lines = text.split("\n")
    k = lines.index(next(line for line in lines if "filter/DOCKER-USER #1" in line))
    assert nf[0] in lines[k - 1] and lines[k].strip() == "filter/DOCKER-USER #1  -A DOCKER-USER -s 198.18.0.2/32 -j DROP  ⇒ drop"
    plain = render_rows(jr, False).tobytes().decode()
    assert [line for line in lines if not line.startswith(" " * 15 + "filter/")] == plain.split("\n")
    out = with_rules_json(journey_json_block(jr)[0], jr, per_hop).decode().splitlines()
    mine = json.loads(out[j])
    assert mine["drop_rule"] == info and mine["hops"][at - s0]["rules"] == [info]
    assert all("rules" in h for line in out for h in json.loads(line)["hops"])
    assert rule_line({"family": "inet", "table": "t", "chain": "c", "type": "policy", "verdict": "drop"}, False) == "inet t/c policy  ⇒ drop"


def test_a_hit_at_a_hook_without_a_hop_goes_to_the_hop_before_that_hook():
    """--hooks lean has no FORWARD hop: FORWARD's rules go to PREROUTING
    after NAT (the hop before it in the pass), not to the journey's last
    hop (the container's eth0), and say where they were met."""
    jr = _rows()
    j = jr.packet_id.tolist().index(101)  # the request through DNAT: PREROUTING, FORWARD, ...
    hooks = [jr.hook.values[c] for c in jr.hook.codes[jr.starts[j]:jr.starts[j + 1]]]
    assert "nf_input" not in hooks and "nf_prerouting" in hooks, hooks
    s0 = int(jr.starts[j])
    pre = s0 + len(hooks) - 1 - hooks[::-1].index("nf_prerouting")
    info = _r("filter", "INPUT", 1, "accept", "-A INPUT -j ACCEPT")
    book = RuleBook()
    book.add([(101, "nf_input", info)])
    assert hop_rules(jr, book.pop([101])) == {pre: [dict(info, at_hook="nf_input")]}
    forward = dict(info, at_hook="nf_forward")
    assert rule_line(forward, False, "lean") == ("filter/INPUT #1  -A INPUT -j ACCEPT  ⇒ accept"
                                                 "  (at FORWARD: no hop traced there)"), "lean leaves FORWARD out"
    assert rule_line(forward, False) == ("filter/INPUT #1  -A INPUT -j ACCEPT  ⇒ accept"
                                         "  (at FORWARD: no sighting there)"), "every hook: traced, not sighted"
    assert rule_line(dict(info, at_hook="nf_input"), False, "lean").endswith("(at INPUT: no sighting there)"), \
        "lean traces INPUT"


def test_the_text_of_a_rule_at_a_hook_without_a_hop_follows_the_book_s_profile():
    """`trace --rules` and `show` word a hit at a hook the journey has no hop
    for as the run's hook profile explains it (journey_block passes the
    book's profile to the text): lean leaves FORWARD out, every hook traces
    it (the sighting is missing); both trace INPUT."""
    from tracer.journey_block import journey_block
    from tracer.proxies import ProxyLinks

    jr = _rows()
    pid = 404  # tc_ingress, nf_prerouting: no FORWARD hop, no INPUT hop
    fwd = _r("filter", "DOCKER-USER", 1, "accept", "-A DOCKER-USER -j RETURN")
    inp = _r("filter", "INPUT", 2, "accept", "-A INPUT -j ACCEPT")
    said = {}
    for profile in ("lean", "all"):
        book = RuleBook(profile)
        book.add([(pid, "nf_forward", fwd), (pid, "nf_input", inp)])
        text = bytes(journey_block(jr, False, False, book, ProxyLinks())[0]).decode()
        said[profile] = [line.split("⇒ accept")[1].strip() for line in text.split("\n") if "⇒" in line]
    assert said["lean"] == ["(at FORWARD: no hop traced there)", "(at INPUT: no sighting there)"], said
    assert said["all"] == ["(at FORWARD: no sighting there)", "(at INPUT: no sighting there)"], said


def _hop(hook, stage=None, src="198.18.0.2:40000", dst="198.18.0.1:8000", ifname="trc-host", container=None, rules=()):
    return {"hook": hook, "nat_stage": stage, "ifname": ifname, "netns": 1, "container": container, "src": src, "dst": dst,
            "dt_ns": 0, "container_id": None, "rules": list(rules)}


def _r(table, chain, position, verdict, text, target=None, kind="rule"):
    return {"family": "ip", "table": table, "chain": chain, "type": kind, "position": position, "handle": 1,
            "verdict": verdict, "target": target, "iptables": text, "nft": None}


def test_explain_in_words():
    from tracer.explain import explain

    ctr = "172.17.0.2:8080"
    dnat = _r("nat", "DOCKER", 2, "accept", "-A DOCKER ! -i docker0 -p tcp -m tcp --dport 8000 -j DNAT --to-destination 172.17.0.2:8080")
    jump = _r("nat", "PREROUTING", 1, "jump", "-A PREROUTING -m addrtype --dst-type LOCAL -j DOCKER", target="DOCKER")
    accept = _r("filter", "DOCKER", 1, "accept", "-A DOCKER -d 172.17.0.2/32 ! -i docker0 -o docker0 -p tcp -m tcp --dport 8080 -j ACCEPT")
    request = {"protocol": "tcp", "tcp_flags": "S", "direction": "original", "verdict": "delivered", "container": "web",
               "hops": [_hop("tc_ingress"), _hop("nf_prerouting", "before"), _hop("nf_prerouting", "after", dst=ctr, rules=[jump, dnat]),
                        _hop("nf_forward", dst=ctr, rules=[accept]), _hop("tc_egress", dst=ctr, ifname="docker0"),
                        _hop("tc_ingress", dst=ctr, ifname="eth0", container="web")]}
    back = _r("filter", "FORWARD", 5, "accept", "-A FORWARD -i docker0 ! -o docker0 -j ACCEPT")
    reply = {"protocol": "tcp", "tcp_flags": "SA", "direction": "reply", "verdict": "delivered",
             "hops": [_hop("tc_egress", src=ctr, dst="198.18.0.2:40000", ifname="eth0", container="web"),
                      _hop("nf_forward", src=ctr, dst="198.18.0.2:40000", rules=[back]),
                      _hop("nf_postrouting", "before", src=ctr, dst="198.18.0.2:40000"),
                      _hop("nf_postrouting", "after", src="198.18.0.1:8000", dst="198.18.0.2:40000"),
                      _hop("tc_egress", src="198.18.0.1:8000", dst="198.18.0.2:40000")]}
    text = explain(request, reply)
    assert "1. Arrived on trc-host from 198.18.0.2:40000 for 198.18.0.1:8000." in text
    assert f"PREROUTING: nat/DOCKER #2 ({dnat['iptables']}) translated its destination to {ctr} (via nat/PREROUTING #1 → DOCKER)." in text
    assert f"FORWARD: accepted by filter/DOCKER #1 ({accept['iptables']})." in text
    assert f"Delivered through docker0 to container web's eth0 at {ctr}." in text
    assert "POSTROUTING: conntrack translated its source back to 198.18.0.1:8000" in text
    assert "Left on trc-host from 198.18.0.1:8000 toward 198.18.0.2:40000." in text
    drop = _r("filter", "DOCKER-USER", 1, "drop", "-A DOCKER-USER -s 198.18.0.2/32 -j DROP")
    dropped = dict(request, verdict="dropped", drop_reason="NETFILTER_DROP",
                   hops=request["hops"][:3] + [_hop("nf_forward", dst=ctr, rules=[drop]), _hop("drop", dst=ctr)])
    text = explain(dropped, None)
    assert f"FORWARD: dropped by filter/DOCKER-USER #1 ({drop['iptables']})." in text
    assert "Dropped after FORWARD on trc-host (kernel reason NETFILTER_DROP)." in text and "No reply" not in text
    assert "No reply seen within 5 s." in explain(request, None, 5)


def test_explain_under_lean_says_forward_apart_and_places_the_drop():
    """--hooks lean has no FORWARD hop: FORWARD's rules are on PREROUTING
    after NAT with `at_hook` (hop_rules); explain says them as FORWARD's,
    not PREROUTING's, and a drop there as in FORWARD."""
    from tracer.cli.explain import _opens
    from tracer.explain import explain

    ctr = "172.17.0.2:8080"
    dnat = _r("nat", "DOCKER", 2, "accept", "-A DOCKER ! -i docker0 -p tcp -m tcp --dport 8000 -j DNAT --to-destination 172.17.0.2:8080")
    accept = dict(_r("filter", "DOCKER", 1, "accept", "-A DOCKER -d 172.17.0.2/32 ! -i docker0 -o docker0 -j ACCEPT"),
                  at_hook="nf_forward")
    request = {"protocol": "tcp", "tcp_flags": "S", "direction": "original", "verdict": "delivered", "container": "web",
               "hops": [_hop("tc_ingress"), _hop("nf_prerouting", "after", dst=ctr, rules=[dnat, accept]),
                        _hop("nf_postrouting", "after", dst=ctr), _hop("tc_egress", dst=ctr, ifname="veth1"),
                        _hop("tc_ingress", dst=ctr, ifname="eth0", container="web")]}
    assert _opens(request), "a lean request has no FORWARD hop: POSTROUTING says it was routed"
    text = explain(request, None, hooks="lean")
    assert f"PREROUTING: nat/DOCKER #2 ({dnat['iptables']}) translated its destination to {ctr}." in text, text
    assert f"FORWARD (no hop traced there): accepted by filter/DOCKER #1 ({accept['iptables']})." in text, text
    assert text.index("PREROUTING:") < text.index("FORWARD (no hop") < text.index("POSTROUTING:"), text
    drop = dict(_r("filter", "DOCKER-USER", 1, "drop", "-A DOCKER-USER -s 198.18.0.2/32 -j DROP"), at_hook="nf_forward")
    pre = _hop("nf_prerouting", "after", dst=ctr, rules=[dnat, drop])
    dropped = dict(request, verdict="dropped", drop_reason="NETFILTER_DROP", hops=[_hop("tc_ingress"), pre, _hop("drop", dst=ctr)])
    text = explain(dropped, None, hooks="lean")
    assert f"FORWARD (no hop traced there): dropped by filter/DOCKER-USER #1 ({drop['iptables']})." in text, text
    assert "Dropped in FORWARD (no hop traced there), after PREROUTING on trc-host (kernel reason NETFILTER_DROP)." in text
    # No rule names the hook (a policy's drop not reported, say): lean's drop_place, in words.
    unnamed = dict(dropped, hops=[_hop("tc_ingress"), _hop("nf_prerouting", "after", dst=ctr), _hop("drop", dst=ctr)])
    assert ("Dropped in FORWARD or INPUT (not traced: --hooks lean), after PREROUTING on trc-host "
            "(kernel reason NETFILTER_DROP).") in explain(unnamed, None, hooks="lean")
    assert "Dropped after PREROUTING on trc-host (kernel reason NETFILTER_DROP)." in explain(unnamed, None)


def test_explain_under_lean_a_drop_by_a_rule_at_the_last_hop_is_placed_there():
    """A drop rule reported at the hop itself (an nft filter chain at
    PREROUTING priority 0, after lean's PREROUTING probe) places the drop:
    not also in FORWARD or INPUT, which lean's placement says only when no
    rule was reported (review S13A #2)."""
    from tracer.explain import explain

    ctr = "172.17.0.2:8080"
    dnat = _r("nat", "DOCKER", 2, "accept", "-A DOCKER ! -i docker0 -p tcp -m tcp --dport 8000 -j DNAT --to-destination 172.17.0.2:8080")
    pre_drop = {"family": "inet", "table": "myfw", "chain": "pre", "type": "rule", "position": 1, "handle": 5,
                "verdict": "drop", "target": None, "iptables": None, "nft": "ip saddr 198.18.0.2 drop"}
    req = {"protocol": "tcp", "tcp_flags": "S", "direction": "original", "verdict": "dropped", "drop_reason": "NETFILTER_DROP",
           "hops": [_hop("tc_ingress"), _hop("nf_prerouting", "after", dst=ctr, rules=[dnat, pre_drop]), _hop("drop", dst=ctr)]}
    for profile in ("lean", "all"):
        text = explain(req, None, hooks=profile)
        assert "dropped by inet myfw/pre #1 (nft: ip saddr 198.18.0.2 drop)." in text, text
        assert "3. Dropped after PREROUTING on trc-host (kernel reason NETFILTER_DROP)." in text, text
        assert "FORWARD" not in text and "not traced" not in text, text


def test_explain_words_a_rule_at_a_hook_without_a_hop_by_the_profile():
    """`at_hook` under --hooks all: the hook is traced but the packet was
    not sighted there (filter INPUT runs before INPUT's probe, raw
    PREROUTING before PREROUTING's, or a lost sighting): "no sighting
    there", not "no hop traced there", which is lean's FORWARD. The rule
    that dropped it is named, also when it sits on a tc hop (review S13A #3)."""
    from tracer.explain import explain

    ssh = "198.18.0.1:22"
    inp = dict(_r("filter", "INPUT", 1, "drop", "-A INPUT -p tcp --dport 22 -j DROP"), at_hook="nf_input")
    to_input = {"protocol": "tcp", "tcp_flags": "S", "direction": "original", "verdict": "dropped", "drop_reason": "NETFILTER_DROP",
                "hops": [_hop("tc_ingress", dst=ssh), _hop("nf_prerouting", "before", dst=ssh),
                         _hop("nf_prerouting", "after", dst=ssh, rules=[inp]), _hop("drop", dst=ssh)]}
    raw = dict(_r("raw", "PREROUTING", 1, "drop", "-A PREROUTING -s 198.18.0.2/32 -j DROP"), at_hook="nf_prerouting")
    at_raw = {"protocol": "tcp", "tcp_flags": "S", "direction": "original", "verdict": "dropped", "drop_reason": "NETFILTER_DROP",
              "hops": [_hop("tc_ingress", rules=[raw]), _hop("drop")]}
    for profile in ("all", "lean"):
        text = explain(to_input, None, hooks=profile)
        assert f"3. INPUT (no sighting there): dropped by filter/INPUT #1 ({inp['iptables']})." in text, (profile, text)
        assert "4. Dropped in INPUT (no sighting there), after PREROUTING on trc-host (kernel reason NETFILTER_DROP)." in text
        text = explain(at_raw, None, hooks=profile)
        assert f"2. PREROUTING (no sighting there): dropped by raw/PREROUTING #1 ({raw['iptables']})." in text, (profile, text)
        assert "3. Dropped in PREROUTING (no sighting there), after tc ingress on trc-host (kernel reason NETFILTER_DROP)." in text
        assert "no hop traced" not in text and "tc_ingress" not in text, text
    # FORWARD's rule under all (a lost sighting): sighted nowhere, though traced.
    fwd = dict(_r("filter", "DOCKER-USER", 1, "drop", "-A DOCKER-USER -s 198.18.0.2/32 -j DROP"), at_hook="nf_forward")
    lost = dict(at_raw, hops=[_hop("tc_ingress"), _hop("nf_prerouting", "after", rules=[fwd]), _hop("drop")])
    assert "Dropped in FORWARD (no sighting there), after PREROUTING" in explain(lost, None, hooks="all")
    assert "Dropped in FORWARD (no hop traced there), after PREROUTING" in explain(lost, None, hooks="lean")


def test_explain_json_names_the_profile(monkeypatch):
    """`explain --json`: each journey says the profile it was traced with
    (a lean one lacks FORWARD by design: review S13A #8)."""
    from click.testing import CliRunner

    from tracer.cli import cli
    from tracer.cli import explain as explain_cli

    request = {"protocol": "tcp", "verdict": "delivered", "hops": [_hop("tc_ingress")]}
    monkeypatch.setattr(explain_cli, "watch_connection", lambda options, timeout: (request, dict(request), 0.1))
    for profile in ("lean", "all"):
        result = CliRunner().invoke(cli, ["explain", "--port", "8000", "--json", "--hooks", profile])
        assert result.exit_code == 0, result.output
        lines = [json.loads(line) for line in result.output.splitlines()]
        assert [j["hooks"] for j in lines] == [profile, profile] and lines[0]["hops"] == request["hops"], lines


def test_a_rule_at_a_hook_without_a_hop_reaches_explain_through_hop_rules_and_the_json():
    """hop_rules puts a rule met at a hook the journey has no hop for on
    the hop before it with `at_hook`; through the journey JSON, explain says
    it as that hook's step, worded by the profile (review S13A #7)."""
    from tracer.explain import explain
    from tracer.journey_json import journey_json_block

    jr = _rows()
    j = jr.packet_id.tolist().index(101)  # the request through DNAT: no INPUT hop
    info = _r("filter", "INPUT", 1, "accept", "-A INPUT -j ACCEPT")
    book = RuleBook()
    book.add([(101, "nf_input", info)])
    out = with_rules_json(journey_json_block(jr)[0], jr, hop_rules(jr, book.pop([101]))).decode().splitlines()
    journey = json.loads(out[j])
    assert any(r.get("at_hook") == "nf_input" for h in journey["hops"] for r in h["rules"]), journey
    assert "INPUT (no sighting there): accepted by filter/INPUT #1 (-A INPUT -j ACCEPT)." in explain(journey, None)
    assert "INPUT (no sighting there): accepted by" in explain(journey, None, hooks="lean"), "lean traces INPUT after NAT"

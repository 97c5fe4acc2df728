"""The report's path pass on journey rows as stored (tracer/journey_paths.py)
gives what laying them out as sighting rows gives (the sighting path is the
oracle): every group, count, histogram, time series, sequence, drop,
device, container, translation and CPU, and the whole HTML report, on a
capture of every kind of journey: DNAT requests and their replies,
MASQUERADE (SNAT) and its replies, IPv6, host-local traffic through
docker-proxy (with its `proxy` rows), drops with and without a reason,
incomplete journeys, hops whose tuple is not recorded, unknown interfaces,
and packets the fast path hands back (in parts, hops out of order)."""

from __future__ import annotations

import re

import numpy as np
import pytest

from tests.unit.test_decode import HOST_NS, ctx
from tests.unit.test_journey_capture import META
from tests.unit.test_journey_records import AFTER, BEFORE, hop, record
from tracer.analysis import CaptureAnalysis
from tracer.capture.reader import open_capture
from tracer.capture.writer import CaptureWriter
from tracer import paths as paths_module
from tracer.paths import PathStats, Tally, sighting_rows
from tracer.places import Place
from tracer.proxies import ProxyLink

CLIENT, HOST, WEB, GW, REMOTE = "198.18.0.2", "198.18.0.1", "172.17.0.2", "172.17.0.1", "203.0.113.9"
CLIENT6, HOST6, WEB6 = "fd00:198:18::2", "fd00:198:18::1", "fd00:172:17::2"
EXT, VETH, ETH0, BRIDGE, LO = 7, 9, 2, 4, 1  # LO: an interface the context does not know


def _context():
    c = ctx()
    c.book.places[(HOST_NS, BRIDGE)] = Place("docker0", "bridge", HOST_NS)
    return c


def _kinds(rng) -> dict:
    """Record makers by kind: (pid, t0) -> one record (or several: parts)."""
    j = lambda: int(rng.integers(200, 40_000))  # noqa: E731 - a jittered gap

    def at(hops):  # hops with cumulative jittered times
        t, out = 0, []
        for i, h in enumerate(hops):
            t += j() if i else 0
            out.append((*h[:3], t))
        return out

    def dnat(client, host, web):
        return [hop("tc_ingress", EXT), hop("nf_prerouting", EXT, 0, BEFORE), hop("nf_prerouting", EXT, 1, AFTER),
                hop("nf_forward", EXT, 1), hop("nf_postrouting", BRIDGE, 1, BEFORE), hop("tc_egress", BRIDGE, 1),
                hop("tc_egress", VETH, 1), hop("tc_ingress", ETH0, 1, in_ct=True)], \
            [(client, host, 40000, 8000), (client, web, 40000, 8080)]

    def request(pid, t0, v6=False):
        hops, tuples = dnat(CLIENT6, HOST6, WEB6) if v6 else dnat(CLIENT, HOST, WEB)
        return record(pid, t0, at(hops), tuples, flow=pid // 4 + 1, direction=1)

    def reply(pid, t0, v6=False):
        client, host, web = (CLIENT6, HOST6, WEB6) if v6 else (CLIENT, HOST, WEB)
        hops = [hop("tc_egress", ETH0, 0, in_ct=True), hop("tc_ingress", VETH), hop("nf_prerouting", BRIDGE, 0, BEFORE),
                hop("nf_forward", BRIDGE), hop("nf_postrouting", EXT, 0, BEFORE), hop("nf_postrouting", EXT, 1, AFTER),
                hop("tc_egress", EXT, 1)]
        return record(pid, t0, at(hops), [(web, client, 8080, 40000), (host, client, 8000, 40000)],
                      flow=pid // 4 + 1, direction=2)

    def masquerade(pid, t0):
        hops = [hop("tc_egress", ETH0, 0, in_ct=True), hop("tc_ingress", VETH), hop("nf_prerouting", BRIDGE, 0, BEFORE),
                hop("nf_forward", BRIDGE), hop("nf_postrouting", EXT, 0, BEFORE), hop("nf_postrouting", EXT, 1, AFTER),
                hop("tc_egress", EXT, 1)]
        return record(pid, t0, at(hops), [(WEB, REMOTE, 50000, 443), (HOST, REMOTE, 61000 + pid % 3, 443)],
                      flow=pid // 4 + 1, direction=1)

    def masquerade_reply(pid, t0):
        hops = [hop("tc_ingress", EXT), hop("nf_prerouting", EXT, 0, BEFORE), hop("nf_prerouting", EXT, 1, AFTER),
                hop("nf_forward", EXT, 1), hop("tc_egress", VETH, 1), hop("tc_ingress", ETH0, 1, in_ct=True)]
        return record(pid, t0, at(hops), [(REMOTE, HOST, 443, 61000), (REMOTE, WEB, 443, 50000)],
                      flow=pid // 4 + 1, direction=2)

    def proxied(pid, t0):  # docker-proxy's backend leg: made by the host, to the container
        hops = [hop("nf_output", LO), hop("nf_postrouting", BRIDGE, 0, BEFORE), hop("tc_egress", BRIDGE),
                hop("tc_egress", VETH), hop("tc_ingress", ETH0, 0, in_ct=True)]
        return record(pid, t0, at(hops), [(GW, WEB, 47410, 8080)], flow=pid // 4 + 1, direction=1)

    def client_leg(pid, t0):  # the client's leg to docker-proxy, host-local (an interface nobody knows)
        return record(pid, t0, at([hop("nf_output", LO), hop("nf_input", LO)]), [(HOST, HOST, 40000 + pid % 5, 8000)],
                      flow=pid // 4 + 1, direction=1)

    def dropped(pid, t0, reason=12):
        hops, tuples = dnat(CLIENT, HOST, WEB)
        return record(pid, t0, at(hops[:4] + [hop("drop", EXT, 1)]), tuples, end="drop", flow=pid // 4 + 1,
                      direction=1, reason=reason)

    def quiet(pid, t0):
        hops, tuples = dnat(CLIENT, HOST, WEB)
        return record(pid, t0, at(hops[: 1 + pid % 3]), tuples[:1], end="quiet")

    def lost_tuple(pid, t0):  # a hop pointing past its record's tuples: zeros, as laid out
        return record(pid, t0, at([hop("tc_ingress", EXT), hop("nf_prerouting", EXT, 3, AFTER), hop("nf_forward", EXT, 0)]),
                      [(CLIENT, HOST, 40000, 8000)], flow=pid // 4 + 1, direction=1)

    def in_parts(pid, t0):  # a full record then the rest (handed to the sighting path)
        hops, tuples = dnat(CLIENT, HOST, WEB)
        first = record(pid, t0, at(hops[:5]), tuples, end="full", flow=pid // 4 + 1, direction=1)
        rest = record(pid, t0 + 60_000, at(hops[5:]), tuples[1:], new=False, flow=pid // 4 + 1, direction=1)
        return np.concatenate([first, rest])

    def out_of_order(pid, t0):
        r = request(pid, t0)
        r["hops"]["dt_ns"][0, 1] = r["hops"]["dt_ns"][0, 2] + 5
        return r

    return {"request": request, "reply": reply, "request6": lambda p, t: request(p, t, True),
            "reply6": lambda p, t: reply(p, t, True), "masquerade": masquerade, "masquerade_reply": masquerade_reply,
            "proxied": proxied, "client_leg": client_leg, "dropped": dropped,
            "dropped_unknown_reason": lambda p, t: dropped(p, t, 77), "dropped_no_reason": lambda p, t: dropped(p, t, 0),
            "quiet": quiet, "lost_tuple": lost_tuple, "in_parts": in_parts, "out_of_order": out_of_order}


def every_kind(path, n: int = 3000, seed: int = 0, mess: bool = True) -> None:
    rng = np.random.default_rng(seed)
    kinds = _kinds(rng)
    names = [k for k in kinds if mess or k not in ("in_parts", "out_of_order", "dropped_no_reason")]
    # the commonest first, several of each: ties in counts are frequent
    weights = np.array([8 if k.startswith(("request", "reply")) else 2 for k in names], float)
    picks = rng.choice(len(names), size=n, p=weights / weights.sum())
    c = _context()
    link = ProxyLink(7, 41, ((HOST, 40000), (HOST, 8000)), ((GW, 47410), (WEB, 8080)), "web")
    with CaptureWriter(path, META, journeys=True) as w:
        batch, t0 = [], 1_000_000
        for i, k in enumerate(picks.tolist()):
            t0 += int(rng.integers(1_000, 3_000_000))  # some packets in other time bins than others
            batch.append(kinds[names[k]](1000 + i, t0))
            if len(batch) == 97:
                w.add_journeys(np.concatenate(batch), c)
                w.flush()
                batch = []
            if i == n // 2:
                w.add_row("proxy", 1, link.to_record())
        if batch:
            w.add_journeys(np.concatenate(batch), c)


def _tally(t) -> tuple:
    return (dict(t), t.most_common())


def summary_of(s) -> list:
    """Everything a PathSummary holds, as plain data (histograms as their counts)."""
    out = [s.bin_ns, s.t0_ns, s.cpu_per_hop]
    for g in s.groups:
        out.append((g.name, g.direction, g.entry, g.nat, g.packets, g.path, g.exit, g.off_path,
                    _tally(g.verdicts), _tally(g.exits), _tally(g.sequences), _tally(g.drops),
                    g.end_to_end.counts.tolist(),
                    [(x.src, x.dst, x.latency.counts.tolist(), sorted((b, h.counts.tolist()) for b, h in x.series.items()))
                     for x in (*g.path_segments(), *g.other_segments())],
                    {k: _tally(v) for k, v in g.devices.items() if v}, {k: _tally(v) for k, v in g.containers.items() if v},
                    {k: _tally(v) for k, v in g.translations.items() if v}, {k: _tally(v) for k, v in g.cpus.items() if v}))
    return out


def both_ways(path, monkeypatch, chunk_rows: int | None = None):
    """(summary, html, sighting-path calls) with the journey rows read as
    stored, and the same with everything laid out as sighting rows."""
    from tracer import packet_window
    from tracer.report import render_report

    if chunk_rows:
        monkeypatch.setattr(packet_window, "MIN_CHUNK_ROWS", chunk_rows)
    out = []
    for journeys in (True, False):
        calls = []
        monkeypatch.setattr(paths_module, "sighting_rows",
                            lambda t, meta=None: (calls.append(t.num_rows), sighting_rows(t, meta))[1])
        capture = open_capture([str(path)])
        paths = PathStats(capture.metadata)
        ca = CaptureAnalysis.of_capture(capture, also=(paths,), journeys=journeys)
        summary = paths.finish()
        html = re.sub(r"<dc:date>[^<]*</dc:date>", "", render_report(ca, summary, files=[str(path)]))
        out.append((summary, html, calls))
    return out


@pytest.mark.parametrize("mess", [False, True])
@pytest.mark.parametrize("chunk_rows", [None, 1 << 11])
def test_every_kind_of_journey_as_the_sighting_path(tmp_path, monkeypatch, mess, chunk_rows):
    path = tmp_path / "kinds.arrows"
    every_kind(path, mess=mess)
    (new, new_html, new_calls), (old, old_html, old_calls) = both_ways(path, monkeypatch, chunk_rows)
    assert (sum(new_calls) > 0) == mess, "only what journey_packets hands back is laid out as sighting rows"
    assert sum(old_calls) > 15_000
    assert summary_of(new) == summary_of(old)
    assert new_html == old_html
    names = {g.name for g in new.groups}
    # what the capture holds is what the groups say
    assert {"external → container · DNAT · requests", "container → external · SNAT · requests",
            "external → container · reverse SNAT · replies"} <= names, names
    # docker-proxy's two legs: made by the host (one group; its exit the commoner leg's)
    assert [g.exits.keys() for g in new.groups if g.entry == "host"] == [{"container", "host"}]
    assert any(g.nat == "reverse DNAT" and g.direction == "reply" for g in new.groups)
    dnat = [g for g in new.groups if g.nat == "DNAT"]
    translations = {t for g in dnat for c in g.translations.values() for t in c}
    assert f"dst → {WEB}:8080" in translations and f"dst → {WEB6}:8080" in translations
    drops = {r for g in new.groups for (_, r) in g.drops}
    assert {"NETFILTER_DROP", "REASON_77"} <= drops
    assert any(g.verdicts.get("unknown") for g in new.groups)
    assert any(d for g in new.groups for d in g.devices.get("tc_egress@bridge", {}))


def test_a_synthetic_capture_in_many_chunks(tmp_path, monkeypatch):
    """scripts/synth_journeys.py's traffic, messed up (tests/unit/test_journey_analysis.py)."""
    from tests.unit.test_journey_analysis import synthetic

    path = tmp_path / "syn.arrows"
    synthetic(path, 40_000, mess=True, seed=5)
    (new, new_html, _), (old, old_html, _) = both_ways(path, monkeypatch, 1 << 12)
    assert summary_of(new) == summary_of(old) and new.packets > 4000
    assert new_html == old_html


def test_ties_go_by_key_not_by_which_came_first():
    a, b = Tally(), Tally()
    for k in ("z", "a", "m", "a"):
        a[k] += 1
    for k in ("a", "m", "z", "a"):
        b[k] += 1
    assert a.most_common() == b.most_common() == [("a", 2), ("m", 1), ("z", 1)]
    assert a.most_common(1) == [("a", 2)]
    c = Tally({("x", None): 1, ("x", "y"): 1, (3,): 1})
    assert [k for k, _ in c.most_common()] == [(3,), ("x", None), ("x", "y")]

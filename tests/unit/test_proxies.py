"""docker-proxy discovery and the links between its legs (no root, no kernel)."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from tracer.proxies import DockerProxy, ProxyLink, ProxyLinks, find_proxies, parse_cmdline
from tracer.proxy_output import annotate_json, annotate_text, journey_notes

ARGV = ["/usr/sbin/docker-proxy", "-proto", "tcp", "-host-ip", "0.0.0.0", "-host-port", "8000",
        "-container-ip", "172.17.0.2", "-container-port", "8080"]
PROXY = DockerProxy(41, "tcp", "0.0.0.0", 8000, "172.17.0.2", 8080)
CLIENT = (("127.0.0.1", 40992), ("127.0.0.1", 8000))
BACKEND = (("172.17.0.1", 47410), ("172.17.0.2", 8080))


def test_cmdline_parsed():
    assert parse_cmdline(41, ARGV) == PROXY
    assert parse_cmdline(41, ["/usr/sbin/docker-proxy", "-proto", "tcp"]) is None


def test_find_proxies_reads_proc(tmp_path: Path):
    for pid, comm, argv in ((41, "docker-proxy", ARGV), (42, "bash", ["bash"]),
                            (43, "docker-proxy", [*ARGV[:2], "udp", *ARGV[3:]])):
        d = tmp_path / str(pid)
        d.mkdir()
        (d / "comm").write_text(comm + "\n")
        (d / "cmdline").write_bytes(b"\0".join(a.encode() for a in argv) + b"\0")
    (tmp_path / "self").mkdir()
    assert find_proxies(tmp_path) == [PROXY]  # udp proxies are not linked


def test_a_link_is_found_from_either_leg_in_either_direction():
    links = ProxyLinks()
    # The request relay: bytes in from the client, out to the container.
    link = links.add(41, CLIENT, BACKEND, {41: PROXY}, lambda ip: "web")
    assert link.client == CLIENT and link.backend == BACKEND and link.container == "web"
    # The reply relay of the same connection is the same link.
    again = links.add(41, (BACKEND[1], BACKEND[0]), (CLIENT[1], CLIENT[0]), {41: PROXY})
    assert again is link and len(links) == 1
    assert links.find(*CLIENT) == (link, "client") and links.find(CLIENT[1], CLIENT[0]) == (link, "client")
    assert links.find(*BACKEND) == (link, "backend")
    assert links.find(("127.0.0.1", 1), ("127.0.0.1", 8000)) is None


def test_links_of_unknown_processes_or_other_peers_are_ignored():
    links = ProxyLinks()
    assert links.add(99, CLIENT, BACKEND, {41: PROXY}) is None
    assert links.add(41, CLIENT, (("172.17.0.1", 1), ("10.0.0.9", 80)), {41: PROXY}) is None
    assert len(links) == 0


def _rows(endpoints):
    """Just what journey_notes and annotate_text read of JourneyRows: one
    journey per (src, dst), two hops each."""
    ips = sorted({ip for s, d in endpoints for ip in (s[0], d[0])}) + [None]
    code = {ip: i for i, ip in enumerate(ips)}
    s_codes, s_ports, d_codes, d_ports = [], [], [], []
    for s, d in endpoints:
        s_codes += [code[s[0]]] * 2
        s_ports += [s[1]] * 2
        d_codes += [code[d[0]]] * 2
        d_ports += [d[1]] * 2
    n = len(s_codes)
    return _Rows(starts=np.arange(0, n + 1, 2), src=(np.array(s_codes), np.array(s_ports), np.zeros(n, bool)),
                 dst=(np.array(d_codes), np.array(d_ports), np.zeros(n, bool)), src_ip=ips, dst_ip=ips)


class _Rows(SimpleNamespace):
    def __len__(self):
        return len(self.starts) - 1


def test_notes_place_the_proxy_hop_where_the_packet_meets_the_proxy():
    links = ProxyLinks()
    link = links.add(41, CLIENT, BACKEND, {41: PROXY})
    jr = _rows([CLIENT, (CLIENT[1], CLIENT[0]), BACKEND, (BACKEND[1], BACKEND[0]),
                (("198.18.0.2", 5), ("198.18.0.1", 8000))])
    notes = journey_notes(jr, links)
    # request into the proxy (after), reply out of it (before); backend request out (before), reply in (after)
    assert [(k, leg, after) for k, _, leg, after in notes] == [
        (0, "client", True), (1, "client", False), (2, "backend", False), (3, "backend", True)]
    assert all(n[1] is link for n in notes)

    block = b"".join(b'{"packet_id": %d, "hops": []}\n' % k for k in range(5))
    out = annotate_json(block, notes).decode().splitlines()
    parsed = [json.loads(line) for line in out]
    assert parsed[0]["proxy"]["leg"] == "client" and parsed[2]["proxy"]["leg"] == "backend"
    assert "proxy" not in parsed[4] and parsed[1]["proxy"]["backend"] == "172.17.0.1:47410 → 172.17.0.2:8080"

    text = "".join(f"#{k}\n  hop a\n  hop b\n" for k in range(5)).encode()
    lines = annotate_text(text, jr, notes).decode().splitlines()
    assert lines[:4] == ["#0", "  hop a", "  hop b", lines[3]] and "proxy  docker-proxy pid 41" in lines[3]
    assert lines[4] == "#1" and "proxy" in lines[5] and lines[6] == "  hop a"
    assert lines[-3:] == ["#4", "  hop a", "  hop b"]


def test_json_annotation_rebuilds_only_the_noted_lines():
    """The noted lines (in any order, the last one without its newline, a
    line of UTF-8) get their proxy object; every other byte is as it was:
    the same text as splitting the block into lines and rewriting those."""
    links = ProxyLinks()
    link = links.add(41, CLIENT, BACKEND, {41: PROXY})
    lines = [b'{"packet_id": %d, "ifname": "\xc3\xa9th%d", "hops": []}' % (k, k) for k in range(7)]
    for block in (b"\n".join(lines) + b"\n", b"\n".join(lines)):
        notes = [(6, link, "backend", False), (0, link, "client", True), (3, link, "client", False)]
        ranges = [(5, 9), None, (0, 4)]
        expected = block.split(b"\n")
        for i, (k, lk, leg, _) in enumerate(notes):
            obj = {**lk.to_json(leg), "bytes": list(ranges[i]) if ranges[i] else None}
            expected[k] = expected[k][:-1] + b', "proxy": ' + json.dumps(obj, ensure_ascii=False).encode() + b"}"
        assert annotate_json(memoryview(block), notes, ranges) == b"\n".join(expected)
        # the same lines cut where the JSON writer says they end (no scan): the same bytes
        ends = np.array([i for i, b in enumerate(block) if b == 0x0A], np.int64)
        assert annotate_json(memoryview(block), notes, ranges, ends) == b"\n".join(expected)
        parsed = [json.loads(line) for line in annotate_json(block, notes, ranges).splitlines()]
        assert [("proxy" in p) for p in parsed] == [True, False, False, True, False, False, True]
        assert parsed[6]["proxy"]["bytes"] == [5, 9] and parsed[0]["proxy"]["bytes"] is None


def test_a_link_round_trips_through_a_capture_row():
    links = ProxyLinks()
    link = links.add(41, CLIENT, BACKEND, {41: PROXY}, lambda ip: "web")
    again = ProxyLink.from_record(json.loads(json.dumps(link.to_record())))
    assert again == link
    other = ProxyLinks()
    other.add_recorded(again)
    other.add_recorded(again)  # the same link twice (a rotated capture, two readers): kept once
    assert other.links == [link] and other.find(*BACKEND) == (link, "backend")


def test_show_of_a_capture_shows_the_recorded_proxy_hop(tmp_path: Path):
    """A capture's `proxy` rows give `show` the proxy hop `trace` showed
    live: the `proxy` object in the JSON and the hop line in the text; a
    capture without them (older, or --no-proxy-links) shows none, and a
    damaged row is left out."""
    from click.testing import CliRunner

    from tests.unit.test_capture import table_of, write
    from tracer.cli import cli

    client = (("198.18.0.2", 40000), ("198.18.0.1", 8000))  # the first journey of table_of's capture
    link = ProxyLink(7, 41, client, BACKEND, "web")
    with_links = tmp_path / "linked.arrows"
    w = write(with_links, [], close=False)
    w.add_row("proxy", 1, {"link": "not a number"})
    w.add_row("proxy", 1, link.to_record())
    w.add_events(table_of(2))
    w.close()
    plain = tmp_path / "plain.arrows"
    write(plain, [table_of(2)])

    def show(path, *args):
        result = CliRunner().invoke(cli, ["show", "--no-color", *args, str(path)])
        assert result.exit_code == 0, result.stderr
        return result.stdout

    journeys = [json.loads(x) for x in show(with_links, "--json").splitlines()]
    # (no SYN in this capture: where its bytes start is unknown)
    assert journeys[0]["proxy"] == {**link.to_json("client"), "bytes": None} and journeys[0]["proxy"]["link"] == 7
    assert "proxy" not in journeys[1]  # another client port: not on this link
    text = show(with_links)
    assert text.count("proxy  docker-proxy pid 41") == 1 and "link 7" in text
    assert all("proxy" not in json.loads(x) for x in show(plain, "--json").splitlines())
    assert "docker-proxy" not in show(plain)


def test_links_are_bounded_and_new_ones_taken_once():
    links = ProxyLinks(keep=2)
    legs = [((("127.0.0.1", 40000 + i), ("127.0.0.1", 8000)), (("172.17.0.1", 50000 + i), ("172.17.0.2", 8080)))
            for i in range(3)]
    made = [links.add(41, c, b, {41: PROXY}) for c, b in legs]
    assert links.add(41, *legs[2], {41: PROXY}) is made[2]  # the same relay again: the same link
    assert links.take_new() == made and links.take_new() == []
    assert len(links) == 2 and links.links == made[1:]
    assert links.find(*legs[0][0]) is None and links.find(*legs[0][1]) is None  # the oldest is forgotten
    assert links.find(*legs[2][1]) == (made[2], "backend")


def _leg_packets(pid0: int, src, dst, isn: int, sizes: list[int], v6: bool = False) -> list[dict]:
    """One direction of a TCP connection as event rows (one hop a packet):
    its SYN, then data packets of these payload sizes, in order."""
    from tests.unit.event_rows import event_defaults

    rows, seq = [], isn
    base = {"hook": "tc_ingress", "ifname": "lo", "src_ip": src[0], "src_port": src[1],
            "dst_ip": dst[0], "dst_port": dst[1], "tcp_doff": 8}
    rows.append(event_defaults(**{**base, "tcp_doff": 10}, packet_id=pid0, ktime_ns=pid0 * 1000, tcp_flags=0x02,
                               tcp_seq=isn, length=(40 if v6 else 20) + 40))
    seq = isn + 1
    for i, n in enumerate(sizes, 1):
        rows.append(event_defaults(**base, packet_id=pid0 + i, ktime_ns=(pid0 + i) * 1000, tcp_flags=0x18,
                                   tcp_seq=seq % (1 << 32), length=(40 if v6 else 20) + 32 + n))
        seq += n
    return rows


def test_byte_ranges_join_packets_the_proxy_resegmented():
    """The client sends 100 + 100 + 56 bytes, the proxy relays them as
    150 + 106: each packet's bytes, as offsets in its leg's stream, and so
    which packets of the other leg carry them. The client's ISN wraps."""
    import pyarrow as pa

    from tracer.events import EVENT_SCHEMA
    from tracer.journey_rows import journey_rows
    from tracer.proxy_output import annotate

    links = ProxyLinks()
    link = links.add(41, CLIENT, BACKEND, {41: PROXY})
    rows = _leg_packets(10, *CLIENT, isn=(1 << 32) - 50, sizes=[100, 100, 56]) + \
        _leg_packets(20, *BACKEND, isn=7, sizes=[150, 106])
    jr = journey_rows(pa.Table.from_pylist(rows, schema=EVENT_SCHEMA))
    out = [json.loads(line) for line in bytes(annotate(b"".join(b'{"packet_id": %d}\n' % i for i in range(len(jr))),
                                                        jr, links, True)).decode().splitlines()]
    spans = {(j["proxy"]["leg"], i): j["proxy"]["bytes"] for i, j in enumerate(out) if "proxy" in j}
    assert [spans[("client", i)] for i in range(4)] == [None, [0, 100], [100, 200], [200, 256]]
    assert [spans[("backend", i)] for i in range(4, 7)] == [None, [0, 150], [150, 256]]
    assert all(j["proxy"]["link"] == link.link_id for j in out)
    text = bytes(annotate(b"".join(b"#%d\n  hop\n" % i for i in range(len(jr))), jr, links, False)).decode()
    assert "link 1  bytes 100-200" in text and "link 1  bytes 150-256" in text


def test_byte_ranges_need_the_opening_and_the_header_length():
    import pyarrow as pa

    from tracer.events import EVENT_SCHEMA
    from tracer.journey_rows import journey_rows
    from tracer.proxy_output import StreamStarts

    rows = _leg_packets(10, *CLIENT, isn=1000, sizes=[10])
    starts = StreamStarts(keep=1)
    data_only = journey_rows(pa.Table.from_pylist(rows[1:], schema=EVENT_SCHEMA))
    starts.observe(data_only)
    assert starts.payload_range(data_only, 0) is None, "no SYN seen: unknown"
    jr = journey_rows(pa.Table.from_pylist(rows, schema=EVENT_SCHEMA))
    starts.observe(jr)
    assert starts.payload_range(jr, 1) == (0, 10) and starts.payload_range(jr, 0) is None  # the SYN carries none
    old = journey_rows(pa.Table.from_pylist([{**r, "tcp_doff": None} for r in rows], schema=EVENT_SCHEMA))
    assert starts.payload_range(old, 1) is None, "a capture without tcp_doff: unknown"
    other = journey_rows(pa.Table.from_pylist(_leg_packets(30, *BACKEND, isn=5, sizes=[3]), schema=EVENT_SCHEMA))
    starts.observe(other)
    assert len(starts) == 1 and starts.payload_range(jr, 1) is None, "bounded: the oldest start forgotten"
    six = _leg_packets(40, ("fd00::2", 40000), ("fd00::1", 8000), isn=9, sizes=[5], v6=True)
    jr6 = journey_rows(pa.Table.from_pylist(six, schema=EVENT_SCHEMA))
    starts.observe(jr6)
    assert starts.payload_range(jr6, 1) == (0, 5), "IPv6: a 40-byte header"


def test_a_reopened_direction_is_the_newest_start_not_the_first_forgotten():
    """A connection whose ports are reused after the first one closed: its
    new start is kept as the newest, so a later opening evicts the other,
    older direction, not it."""
    import pyarrow as pa

    from tracer.events import EVENT_SCHEMA
    from tracer.journey_rows import journey_rows
    from tracer.proxy_output import StreamStarts

    def leg(pid0, src, isn):
        return journey_rows(pa.Table.from_pylist(_leg_packets(pid0, src, ("127.0.0.1", 8000), isn=isn, sizes=[4]),
                                                 schema=EVENT_SCHEMA))

    starts = StreamStarts(keep=2)
    a, b = ("127.0.0.1", 40001), ("127.0.0.1", 40002)
    starts.observe(leg(10, a, 100))
    starts.observe(leg(20, b, 200))
    again = leg(30, a, 5000)  # a's ports reused by a new connection
    starts.observe(again)
    starts.observe(leg(40, ("127.0.0.1", 40003), 300))
    assert starts.payload_range(again, 1) == (0, 4), "the re-opened direction is kept"
    assert starts.payload_range(leg(20, b, 200), 1) is None, "the oldest (b) is the one forgotten"


def test_address_ids_past_16_bits_within_one_batch_start_over_not_collide():
    """Addresses named past 2^16 within one call would overflow the packed
    key: the names start over with this batch's, and its ranges are right."""
    import pyarrow as pa

    from tracer.events import EVENT_SCHEMA
    from tracer.journey_rows import journey_rows
    from tracer.proxy_output import StreamStarts

    starts = StreamStarts()
    starts._ip_ids.update({f"10.{i >> 16}.{(i >> 8) & 255}.{i & 255}": i for i in range(0xFFFF)})
    rows = _leg_packets(10, ("198.18.0.7", 40000), ("198.18.0.9", 8000), isn=77, sizes=[6])
    jr = journey_rows(pa.Table.from_pylist(rows, schema=EVENT_SCHEMA))
    starts.observe(jr)
    assert len(starts._ip_ids) <= 0x10000
    assert starts.payload_range(jr, 1) == (0, 6)


def test_an_empty_chunk_is_no_output_and_changes_no_link():
    """journey_block (trace's live output, show's replay) skips annotating an
    empty chunk: annotate does nothing with one either (same block, no
    connection start noted), so the two callers' ways agree."""
    import pyarrow as pa

    from tracer.events import EVENT_SCHEMA
    from tracer.journey_block import journey_block
    from tracer.journey_rows import journey_rows
    from tracer.proxy_output import annotate

    links = ProxyLinks()
    links.add(41, CLIENT, BACKEND, {41: PROXY})
    empty = journey_rows(pa.Table.from_pylist([], schema=EVENT_SCHEMA))
    for as_json in (True, False):
        assert bytes(annotate(b"kept\n", empty, links, as_json)) == b"kept\n"
        block, count = journey_block(empty, as_json, False, None, links)
        assert bytes(block) == b"" and count == 0
    assert links.streams._isn == {}
    # and a chunk that opens a connection is annotated: its start is noted
    opening = journey_rows(pa.Table.from_pylist(_leg_packets(10, *CLIENT, isn=5, sizes=[]), schema=EVENT_SCHEMA))
    block, count = journey_block(opening, True, False, None, links)
    assert count == 1 and len(links.streams._isn) == 1 and b'"proxy"' in bytes(block)


def _notes_one_by_one(jr, links):
    """The oracle: every journey's first hop looked up on its own."""
    out = []
    for k in range(len(jr)):
        h = int(jr.starts[k])
        src = (jr.src_ip[int(jr.src[0][h])], int(jr.src[1][h]))
        dst = (jr.dst_ip[int(jr.dst[0][h])], int(jr.dst[1][h]))
        hit = links.find(src, dst) if src[0] is not None and dst[0] is not None else None
        if hit is not None:
            link, leg = hit
            out.append((k, link, leg, src == link.client[0] if leg == "client" else dst == link.backend[0]))
    return out


def test_notes_of_many_journeys_match_a_lookup_per_journey():
    """journey_notes groups journeys by their first hop's (src, dst) in one
    packed key: the same notes, in journey order, as a lookup per journey."""
    rng = np.random.default_rng(9)
    links = ProxyLinks()
    links.add(41, CLIENT, BACKEND, {41: PROXY})
    pool = [CLIENT, (CLIENT[1], CLIENT[0]), BACKEND, (BACKEND[1], BACKEND[0]),
            (("198.18.0.2", 5), ("198.18.0.1", 8000)), (("198.18.0.2", 65535), ("198.18.0.9", 0)),
            (("fd00::1", 443), ("198.18.0.1", 8000))]
    for n in (1, 7, 500):
        jr = _rows([pool[i] for i in rng.integers(0, len(pool), n)])
        assert journey_notes(jr, links) == _notes_one_by_one(jr, links)


def test_distinct_pairs_packed_or_not_are_the_same_groups():
    """The packed key and np.unique's rows (the path for values the key
    cannot hold: negative, ports past 16 bits, codes past 31 bits together)
    give the same distinct pairs and the same grouping."""
    from tracer.proxy_output import _distinct_pairs

    rng = np.random.default_rng(1)
    cases = [
        [rng.integers(0, 40, 3000), rng.integers(0, 65536, 3000) % 7, rng.integers(0, 3, 3000), rng.integers(0, 65536, 3000) % 5],
        [rng.integers(0, 3, 50), rng.integers(65530, 65536, 50), rng.integers(0, 3, 50), rng.integers(0, 65536, 50)],
        [rng.integers(-1, 3, 50), rng.integers(0, 3, 50), rng.integers(0, 3, 50), rng.integers(0, 3, 50)],  # fallback
        [rng.integers(0, 3, 50), rng.integers(65536, 65540, 50), rng.integers(0, 3, 50), rng.integers(0, 3, 50)],
        [rng.integers(0, 1 << 20, 50), rng.integers(0, 3, 50), rng.integers(0, 1 << 12, 50), rng.integers(0, 3, 50)],
    ]
    for columns in cases:
        columns = [np.asarray(c, np.int64) for c in columns]
        n_dst = int(columns[2].max()) + 1
        distinct, inverse = _distinct_pairs(columns, n_dst)
        rows = list(zip(*(c.tolist() for c in columns)))
        assert len(set(distinct)) == len(distinct) == len(set(rows))
        assert [distinct[i] for i in np.asarray(inverse).tolist()] == rows


def test_a_link_added_after_a_lookup_is_found_by_the_next():
    """The legs' ports (the filter before the exact lookup) are made again
    when a link comes or goes, not kept from the first batch."""
    links = ProxyLinks(keep=1)
    other = (("172.17.0.1", 50000), ("172.17.0.3", 9090))
    links.add(41, (("198.18.0.2", 7), ("198.18.0.1", 8001)), other, {41: DockerProxy(41, "tcp", "0.0.0.0", 8001, "172.17.0.3", 9090)})
    jr = _rows([CLIENT, BACKEND, other])
    assert [k for k, *_ in journey_notes(jr, links)] == [2]
    link = links.add(41, CLIENT, BACKEND, {41: PROXY})  # keep=1: the first link is forgotten
    assert [(k, n[0]) for k, *n in journey_notes(jr, links)] == [(0, link), (1, link)]
    assert journey_notes(jr, links) == _notes_one_by_one(jr, links)


def test_json_annotation_reads_the_block_in_place():
    """A big block with one noted line is copied once (into the result),
    not first into a bytes object of its own: the peak of what the call
    allocates stays under 1.5 times the block."""
    import tracemalloc

    links = ProxyLinks()
    link = links.add(41, CLIENT, BACKEND, {41: PROXY})
    line = b'{"packet_id": 1, "hops": ["' + b"x" * 2000 + b'"]}\n'
    block = memoryview(line * 4000)  # 8 MB, as a show's JSON arrives (a memoryview of the writer's bytes)
    tracemalloc.start()
    try:
        out = annotate_json(block, [(2, link, "client", True)])
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1.5 * len(block), peak
    lines = out.split(b"\n")
    assert json.loads(lines[2])["proxy"]["leg"] == "client" and lines[3] + b"\n" == line and len(lines) == 4001

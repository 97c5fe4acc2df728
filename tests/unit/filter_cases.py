"""Generated IPv4 and IPv6 packets and pcap-filter expressions for testing the filter
translations against libpcap's own interpreter (the oracle)."""

from __future__ import annotations

import random
import struct

# Expressions a tcpdump user writes, and some that exercise every kind of
# classic BPF instruction libpcap emits (indirect loads, scratch memory,
# arithmetic, shifts by a register, division by a register, len).
EXPRESSIONS = [
    "tcp port 8000 and not host 198.18.0.9",
    "tcp port 8000",
    "udp",
    "icmp",
    "ip",
    "host 198.18.0.2",
    "src host 198.18.0.2 and dst port 8000",
    "net 172.17.0.0/16",
    "not net 10.0.0.0/8 and (tcp or udp)",
    "portrange 8000-8080",
    "tcp dst portrange 1-1024 or udp src port 53",
    "tcp[tcpflags] & (tcp-syn|tcp-fin) != 0",
    "tcp[tcpflags] == tcp-syn",
    "tcp[13] & 4 != 0",
    "icmp[icmptype] = icmp-echo or icmp[icmptype] = icmp-echoreply",
    "ip[6:2] & 0x1fff != 0",
    "ip[8] < 64",
    "len > 100",
    "less 60",
    "greater 1000 and tcp",
    "ip proto 47",
    "ip multicast",
    "tcp[((tcp[12:1] & 0xf0) >> 2):4] = 0x47455420",
    "ip[0] << (ip[1] & 7) = 0x45 or ip[0] << (ip[1] & 7) = 0x114",
    "ip[2:2] / ip[1] > 10",
    "ip[2:2] % ip[1] = 0",
    "ip[4:2] - ip[2:2] > 1000 or ip[4:2] * 3 < 500",
    "(ip[1] ^ ip[8]) & 0x81 = 0x80",
    "-ip[8] > 200",
    "ip[2:2] >> (ip[9] & 31) = 0",
    "tcp[20] = 2 and tcp[21] = 4",
    "udp[8:4] = 0x01020304 or tcp[0:2] = tcp[2:2]",
    "ip[ip[0] & 0xf] = 6",
    "host 198.18.0.1 or host 198.18.0.2 or host 172.17.0.2 or port 53 or port 5201",
    "tcp and (port 80 or port 443) and not src net 192.168.0.0/16",
    "ip6",
    "tcp[100] = 1",
    "ip[250:4] != 0",
    # IPv6: `len` is the payload length + 40 (not bytes 2-3, the flow label's)
    "ip6 and len > 100",
    "ip6 and greater 1000",
    "ip6 and less 90",
    "less 90",
    "greater 300 and tcp port 8000",
    "ip6 src host fd00:198:18::2 and tcp",
    "ip6 and tcp port 8000",
    "ip6 net fd00:198:18::/64 and (udp or icmp6)",
    "ip6[6] = 58 and ip6[40] = 128",
    "ip6[4:2] + 40 = len",
    "ip6[6] = 6 and ip6[53] & 2 != 0",  # a SYN (libpcap has no tcp[] over IPv6)
]

HOSTS = ["198.18.0.1", "198.18.0.2", "198.18.0.9", "172.17.0.2", "10.1.2.3", "192.168.7.7", "224.0.0.251"]
PORTS = [80, 443, 53, 5201, 8000, 8080, 8001, 1, 1024, 40000, 65535]


def _addr(rng: random.Random) -> bytes:
    if rng.random() < 0.8:
        return bytes(int(x) for x in rng.choice(HOSTS).split("."))
    return bytes(rng.randrange(256) for _ in range(4))


def packet(rng: random.Random) -> bytes:
    """One IPv4 packet: TCP (with and without options), UDP, ICMP or another
    protocol, sometimes with IP options, fragments or odd bytes."""
    proto = rng.choice([6, 6, 6, 17, 17, 1, 47, rng.randrange(256)])
    ihl = 5 if rng.random() < 0.8 else rng.randrange(5, 16)
    options = bytes(rng.randrange(256) for _ in range((ihl - 5) * 4))
    port = lambda: rng.choice(PORTS) if rng.random() < 0.8 else rng.randrange(65536)
    if proto == 6:
        doff = 5 if rng.random() < 0.5 else rng.randrange(5, 16)
        flags = rng.choice([0x02, 0x12, 0x10, 0x18, 0x11, 0x04, rng.randrange(256)])
        l4 = struct.pack(">HHIIBBHHH", port(), port(), rng.getrandbits(32), rng.getrandbits(32), doff << 4, flags,
                         rng.randrange(65536), 0, 0)
        opts = bytes(rng.randrange(256) for _ in range((doff - 5) * 4))
        if opts and rng.random() < 0.5:
            opts = b"\x02\x04\x05\xb4" + opts[4:]  # MSS 1460, as a SYN carries it
        l4 += opts
    elif proto == 17:
        l4 = struct.pack(">HHHH", port(), port(), rng.randrange(65536), 0)
    elif proto == 1:
        l4 = struct.pack(">BBHHH", rng.choice([0, 8, 3, 11, rng.randrange(256)]), rng.randrange(4), 0,
                         rng.randrange(65536), rng.randrange(65536))
    else:
        l4 = b""
    payload_len = rng.choice([0, 0, 4, 20, 100, 300, rng.randrange(1500)])
    payload = b"GET " + bytes(rng.randrange(256) for _ in range(max(0, payload_len - 4))) if rng.random() < 0.3 \
        else bytes(rng.randrange(256) for _ in range(payload_len))
    total = 4 * ihl + len(l4) + len(payload)
    frag = 0 if rng.random() < 0.85 else rng.choice([0x2000, 0x0001, 0x00B9, rng.randrange(65536)])
    version = 4 if rng.random() < 0.97 else rng.choice([6, 5])
    tos = rng.choice([0, 0, 0x10, rng.randrange(256)])
    header = struct.pack(">BBHHHBBH4s4s", version << 4 | ihl, tos, total & 0xFFFF, rng.randrange(65536), frag,
                         rng.choice([64, 63, 1, 255, rng.randrange(256)]), proto, 0, _addr(rng), _addr(rng))
    return header + options + l4 + payload


HOSTS6 = ["fd00:198:18::1", "fd00:198:18::2", "fd00:198:18::9", "fd00:172:17::2", "::1", "fe80::1", "ff02::1"]


def _addr6(rng: random.Random) -> bytes:
    import ipaddress

    if rng.random() < 0.8:
        return ipaddress.IPv6Address(rng.choice(HOSTS6)).packed
    return bytes(rng.randrange(256) for _ in range(16))


def packet6(rng: random.Random) -> bytes:
    """One IPv6 packet: TCP, UDP, ICMPv6 or another next header, sometimes
    behind a hop-by-hop or fragment header, a random flow label (bytes 2-3
    of the header, where IPv4 keeps its total length), and now and then a
    payload length that disagrees with the bytes."""
    nxt = rng.choice([6, 6, 6, 17, 17, 58, 0, 44, rng.randrange(256)])
    port = lambda: rng.choice(PORTS) if rng.random() < 0.8 else rng.randrange(65536)
    ext, inner = b"", nxt
    if nxt in (0, 44):  # one extension header (8 bytes) before TCP or UDP
        inner = rng.choice([6, 17])
        ext = struct.pack(">BB6s", inner, 0, bytes(rng.randrange(256) for _ in range(6)) if nxt == 0 else b"\0" * 6)
    if inner == 6:
        doff = 5 if rng.random() < 0.5 else rng.randrange(5, 16)
        flags = rng.choice([0x02, 0x12, 0x10, 0x18, 0x11, 0x04, rng.randrange(256)])
        l4 = struct.pack(">HHIIBBHHH", port(), port(), rng.getrandbits(32), rng.getrandbits(32), doff << 4, flags,
                         rng.randrange(65536), 0, 0) + bytes(rng.randrange(256) for _ in range((doff - 5) * 4))
    elif inner == 17:
        l4 = struct.pack(">HHHH", port(), port(), rng.randrange(65536), 0)
    elif inner == 58:
        l4 = struct.pack(">BBHHH", rng.choice([128, 129, 135, 136, 1, rng.randrange(256)]), 0, 0,
                         rng.randrange(65536), rng.randrange(65536))
    else:
        l4 = b""
    payload = bytes(rng.randrange(256) for _ in range(rng.choice([0, 0, 4, 20, 100, 300, 1000, rng.randrange(1500)])))
    plen = len(ext) + len(l4) + len(payload)
    if rng.random() < 0.1:
        plen = rng.randrange(65536)
    header = struct.pack(">IHBB16s16s", 6 << 28 | rng.randrange(256) << 20 | rng.getrandbits(20), plen, nxt,
                         rng.choice([64, 63, 1, 255]), _addr6(rng), _addr6(rng))
    return header + ext + l4 + payload


def ip_length(packet: bytes) -> int:
    """What `len` is for a packet (the kernel filter's wirelen, and what a
    capture's `length` holds): IPv4's total length, IPv6's payload length + 40
    (by the version nibble, as the kernel filter reads it)."""
    if packet[0] >> 4 == 6:
        return struct.unpack_from(">H", packet, 4)[0] + 40
    return struct.unpack_from(">H", packet, 2)[0]


def packets(count: int, seed: int = 13) -> list[bytes]:
    """``count`` IPv4 packets, then a quarter as many IPv6 ones."""
    rng = random.Random(seed)
    v4 = [packet(rng) for _ in range(count)]
    return v4 + [packet6(rng) for _ in range(count // 4)]


def handmade():
    """Programs libpcap's code generator (almost) never emits, written by
    hand: stx and ldx from scratch memory, txa, jumps on X, ret A."""
    from tracer.pcap import CompiledFilter

    return [
        CompiledFilter("handmade: stx/ldx mem, txa, jgt x, ret a", (
            (0x01, 0, 0, 9),      # ldx #9
            (0x03, 0, 0, 3),      # stx M[3]
            (0x30, 0, 0, 9),      # ldb [9]        (protocol)
            (0x61, 0, 0, 3),      # ldx M[3]
            (0x50, 0, 0, 0),      # ldb [x+0]      (protocol again)
            (0x87, 0, 0, 0),      # txa            (A = 9)
            (0x30, 0, 0, 8),      # ldb [8]        (ttl)
            (0x2D, 0, 1, 0),      # jgt x: ttl > 9
            (0x16, 0, 0, 0),      # ret a          (ttl, non-zero)
            (0x06, 0, 0, 0),      # ret #0
        )),
        CompiledFilter("handmade: ja, jset x, ldx len, div x", (
            (0x81, 0, 0, 0),      # ldx len
            (0x28, 0, 0, 2),      # ldh [2]        (total length)
            (0x3C, 0, 0, 0),      # div x          (1 when they agree)
            (0x05, 0, 0, 1),      # ja +1
            (0x06, 0, 0, 0),      # ret #0 (skipped)
            (0x4D, 0, 1, 0),      # jset x: A & len
            (0x06, 0, 0, 1),      # ret #1
            (0x06, 0, 0, 0),      # ret #0
        )),
    ]

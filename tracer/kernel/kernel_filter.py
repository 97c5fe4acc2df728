"""What the kernel matches (bpf/common.h filter_match, sampled), as values.

Which parts of the filter are on (a protocol, one port or several, hosts,
containers, docker-proxy backends, a sample rate) is itself a value, like
the port and the protocol: one compiled build serves every combination of
--port, --host, --container, --proto and --sample, so a start with any of
them takes the build setup.sh prebuilt (the program cache) instead of
compiling (~1 s of clang here). Tracer's loader writes the values in
(program_cache.patch); the verifier sees constants and drops the parts that
are off, so the programs run as if compiled for the one combination. BCC's
own builds (TRACER_DEBUG) take the same values as -D constants. Only a
filter expression (its C, from libpcap's BPF) and more than FILTER_MAP_MIN
ports or hosts change the build.
"""

from __future__ import annotations

import ctypes
import ipaddress
import socket
import struct
from dataclasses import dataclass
from typing import Iterable

from tracer import events

# Filter maps (--port, --host) are sized to the values given, at least this.
FILTER_MAP_MIN = 64
# Each of the filter's values (Filter.values) as a clang flag: its macro,
# the marker tracer's loader writes it into (bpf/common.h), the suffix of
# the constant BCC's own builds take instead.
_VALUE_FLAGS = {"on": ("FILTER_ON", "TRC_FILTER_ON", "ULL"), "proto": ("FILTER_PROTO", "TRC_FILTER_PROTO", ""),
                "port": ("FILTER_PORT", "TRC_FILTER_PORT", ""), "sample": ("SAMPLE_N", "TRC_SAMPLE_N", "u")}
# The parts of the filter, as FILTER_ON's bits (FILTER_ON_* in the C, from
# c_definitions): each is checked only when its bit is set.
PARTS = ("proto", "port", "ports", "hosts", "containers", "proxy_backends", "sample")
# --host values: each is a map entry the kernel allocates up front.
MAX_FILTER_HOSTS = 65536
# --sample N: a flow is followed when a 32-bit hash of it is 0 mod N.
MAX_SAMPLE = (1 << 32) - 1


def c_definitions() -> str:
    """FILTER_ON_PROTO, FILTER_ON_PORT...: the bits of FILTER_ON, for bpf/common.h."""
    return "\n".join(f"#define FILTER_ON_{part.upper()} {1 << i}ULL" for i, part in enumerate(PARTS)) + "\n"


@dataclass(frozen=True)
class Filter:
    """What the kernel matches (filter_match in bpf/common.h), as plain
    values checked above this layer (tracer/targets.py): ports, addresses, a
    protocol, 1 in ``sample`` flows, and the C of a filter expression.
    Container addresses/ports and docker-proxy backends come and go with
    containers (``write_containers``, ``write_proxy_backends``)."""

    ports: tuple[int, ...] = ()
    hosts: tuple[str, ...] = ()
    proto: str | None = None
    sample: int = 1
    containers: bool = False
    # tracer/cbpf.py expression_c: libpcap's classic BPF translated ('' for none).
    expression_c: str = ""
    follow_proxies: bool = False

    def c_filter(self) -> str:
        """The expression as C for the BCC programs ('' without one)."""
        return self.expression_c

    def cflags(self, open_values: bool = False) -> list[str]:
        """The filter's clang flags; ``open_values``: its values (which parts
        are on, the port, protocol and sample rate) left for tracer's loader
        to write in (``values``; bpf/common.h TRC_FILTER_ON), so the build,
        and its program-cache entry, is the same whatever they are. BCC's own
        builds take them as constants."""
        flags = []
        for name, value in self.values().items():
            macro, marker, suffix = _VALUE_FLAGS[name]
            flags.append(f"-D{macro}={marker if open_values else f'{value}{suffix}'}")
        if self.expression_c:
            flags.append("-DPCAP_FILTER")
        # The filter maps hold what was asked for, however much (any number
        # of ports fits: there are 65535).
        flags.append(f"-DFILTER_PORT_ENTRIES={max(FILTER_MAP_MIN, len(set(self.ports)))}")
        flags.append(f"-DFILTER_HOST_ENTRIES={max(FILTER_MAP_MIN, len(set(self.hosts)))}")
        return flags

    def parts(self) -> tuple[str, ...]:
        """The parts that are on (PARTS)."""
        on = {"proto": bool(self.proto), "port": len(self.ports) == 1, "ports": len(self.ports) > 1,
              "hosts": bool(self.hosts), "containers": self.containers, "proxy_backends": self.follow_proxies,
              "sample": self.sample > 1}
        return tuple(part for part in PARTS if on[part])

    def values(self) -> dict[str, int]:
        """The values an open build's slots take (program_cache.FILTER_VALUE_MARKERS):
        FILTER_ON's bits, the protocol's number, the one port (network
        order), the sample rate; those of parts that are off are 0 (1 for
        the rate), never read."""
        parts = self.parts()
        return {"on": sum(1 << PARTS.index(part) for part in parts),
                "proto": events.PROTOCOL_NUMBERS[self.proto] if "proto" in parts else 0,
                "port": socket.htons(self.ports[0]) if "port" in parts else 0,
                "sample": self.sample if "sample" in parts else 1}

    def fill_maps(self, bpf) -> None:
        """The ports and addresses asked for (containers' come separately)."""
        one = ctypes.c_uint8(1)
        if len(self.ports) > 1:
            _fill(bpf["filter_ports"], (_be16(p) for p in self.ports), one)
        _fill_addrs(bpf["filter_hosts"], self.hosts, one)


def write_containers(bpf, addrs: Iterable[str], ports: Iterable[int]) -> None:
    """The traced containers' addresses and published host ports (containers
    come and go, restarts change the address): the maps rewritten whole."""
    one = ctypes.c_uint8(1)
    bpf["filter_ctr_addrs"].clear()
    bpf["filter_ctr_ports"].clear()
    _fill_addrs(bpf["filter_ctr_addrs"], addrs, one)
    _fill(bpf["filter_ctr_ports"], (_be16(p) for p in ports), one)


def write_proxy_backends(bpf, backends: Iterable[tuple[str, int]]) -> None:
    """docker-proxy backends (container address, port) whose client leg is
    traced too (bpf/proxy.c), rewritten whole."""
    table = bpf["filter_proxy_backends"]
    table.clear()
    for ip, port in backends:
        key = table.Key()
        key.addr.hi, key.addr.lo = _addr_words(ip)
        key.port = _be16(port)
        table[key] = ctypes.c_uint8(1)


def _be16(port: int) -> int:
    return socket.htons(port)


def _addr_words(ip: str) -> tuple[int, int]:
    """struct trc_addr of an address (tracer/events.py): its 16 recorded
    bytes, IPv4 as IPv4-mapped IPv6, as the two u64 words the map keys hold."""
    a = ipaddress.ip_address(ip)
    raw = b"\0" * 10 + b"\xff\xff" + a.packed if a.version == 4 else a.packed
    return struct.unpack("<QQ", raw)


def _fill_addrs(table, ips: Iterable[str], value) -> None:
    """Address keys (struct trc_addr: the 16 recorded bytes as two u64 words)."""
    for ip in ips:
        table[table.Key(*_addr_words(ip))] = value


def _fill(table, keys: Iterable[int], value) -> None:
    for key in keys:
        table[table.Key(key)] = value

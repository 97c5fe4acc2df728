"""What to trace live, or to show from a capture: one frozen ``Targets``,
built and checked once from the command line (`trace`, `record`, `latency`,
`explain` and `show` take the same options), with ``describe()`` for the
UI and ``select(table)`` for `show`. The kernel gets plain values from it
(``kernel_filter``: tracer/kernel/program.Filter writes them into maps)."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Iterable

import pyarrow as pa
import pyarrow.compute as pc

from tracer import events
from tracer.errors import TracerError
from tracer.kernel.kernel_filter import MAX_FILTER_HOSTS, MAX_SAMPLE, Filter

if TYPE_CHECKING:
    from tracer.cbpf import CompiledFilter


@dataclass(frozen=True)
class Targets:
    ports: tuple[int, ...] = ()
    hosts: tuple[str, ...] = ()
    containers: tuple[str, ...] = ()  # names or id prefixes, as asked for
    proto: str | None = None
    sample: int = 1  # follow 1 in `sample` flows (chosen in the kernel)
    # A pcap-filter expression, ANDed with the options (tcpdump's words).
    expression: str | None = None

    def __post_init__(self) -> None:
        if not 1 <= self.sample <= MAX_SAMPLE:
            raise TracerError(f"--sample must be between 1 and {MAX_SAMPLE}, not {self.sample}")
        for port in self.ports:
            if not 0 < port < 65536:
                raise TracerError(f"port {port} is out of range (1-65535)")
        if len(set(self.hosts)) > MAX_FILTER_HOSTS:
            raise TracerError(f"{len(set(self.hosts)):,} --host values: at most {MAX_FILTER_HOSTS:,} (the kernel's filter map)")
        if self.proto is not None and self.proto not in events.PROTOCOL_NUMBERS:
            names = ", ".join(sorted(events.PROTOCOL_NUMBERS))
            raise TracerError(f"unknown protocol {self.proto!r} (choose one of: {names})")
        for host in self.hosts:
            try:
                ipaddress.ip_address(host)
            except ValueError:
                raise TracerError(f"--host {host!r} is not an IPv4 or IPv6 address") from None

    @classmethod
    def from_cli(cls, ports=(), containers=(), hosts=(), proto: str | None = None, sample: int = 1,
                 expression=(), live: bool = True) -> "Targets":
        """From the options' values and the expression's words. A bad
        expression fails here, before any kernel work: as the C the BPF
        programs include (``live``), or as the program `show` runs."""
        from tracer.pcap import expression_of

        text = expression_of(expression)
        targets = cls(tuple(ports), tuple(hosts), tuple(containers), proto.lower() if proto else None, sample, text)
        if live:
            targets.expression_c  # noqa: B018 - libpcap and the translation check it
        else:
            targets.compiled  # noqa: B018
        return targets

    @cached_property
    def expression_c(self) -> str:
        """The expression as C for the BCC programs ('' without one)."""
        from tracer.cbpf import expression_c

        return expression_c(self.expression)

    @cached_property
    def compiled(self) -> "CompiledFilter | None":
        """The expression as the classic BPF program `show` runs over
        recorded headers (None without one)."""
        if self.expression is None:
            return None
        from tracer.cbpf import check
        from tracer.pcap import compile_filter

        compiled = compile_filter(self.expression)
        check(compiled)
        return compiled

    def describe(self, container_names: Iterable[str] = ()) -> str:
        """For the UI and a capture's metadata: ``container_names`` are the
        containers Docker resolved (the names asked for without them)."""
        parts = [f"port {p}" for p in self.ports]
        parts += [f"host {h}" for h in self.hosts]
        parts += [f"container {name}" for name in (tuple(container_names) or self.containers)]
        if self.proto:
            parts.append(f"proto {self.proto}")
        if self.expression:
            parts.insert(0, f"'{self.expression}'")
        text = " and ".join(parts) or "all IPv4 and IPv6 traffic"
        return text + (f", 1 in {self.sample} flows" if self.sample > 1 else "")

    def kernel_filter(self, follow_proxies: bool = False) -> Filter:
        """The plain values the kernel matches on (container addresses and
        ports come later, as Docker names them: Filter's maps)."""
        return Filter(ports=self.ports, hosts=self.hosts, proto=self.proto, sample=self.sample,
                      containers=bool(self.containers), expression_c=self.expression_c, follow_proxies=follow_proxies)

    def select(self, table: pa.Table, packets=(), flows=()) -> pa.Table:
        """Rows of the packets that match every target at one hop or another
        (a target names a property some hop had, as the kernel's filter
        matches before or after NAT), and whose id is one of ``packets`` or
        flow one of ``flows`` when given; the expression runs over each
        row's synthesised headers."""
        if table.num_rows == 0 or not (self.ports or self.hosts or self.containers or self.proto or self.expression
                                       or packets or flows):
            return table
        keep = None
        for row_mask in self._row_masks(table, packets, flows):
            ids = pc.unique(table["packet_id"].filter(row_mask))
            packet_mask = pc.is_in(table["packet_id"], value_set=ids.combine_chunks() if isinstance(ids, pa.ChunkedArray) else ids)
            keep = packet_mask if keep is None else pc.and_(keep, packet_mask)
        return table.filter(keep)

    def _row_masks(self, table: pa.Table, packets, flows):
        def any_of(column: str, values) -> pa.ChunkedArray:
            # dictionary columns: compare their string values
            return pc.fill_null(pc.is_in(table[column].cast(pa.string()), value_set=pa.array(values, pa.string())), False)

        if self.ports:
            ported = pc.fill_null(pc.is_in(table["protocol"].cast(pa.string()), value_set=pa.array(["tcp", "udp"])), False)
            values = pa.array(sorted(set(self.ports)), pa.uint16())
            hit = pc.or_(pc.is_in(table["src_port"], value_set=values), pc.is_in(table["dst_port"], value_set=values))
            yield pc.and_(ported, pc.fill_null(hit, False))
        if self.hosts:
            # --host (cli/options.py HOST) spells them as captures do: fd00::1, not fd00:0::1
            yield pc.or_(any_of("src_ip", list(self.hosts)), any_of("dst_ip", list(self.hosts)))
        if self.containers:
            names = any_of("container_name", list(self.containers))
            ids = table["container_id"].cast(pa.string())
            for wanted in self.containers:
                names = pc.or_(names, pc.fill_null(pc.starts_with(ids, wanted), False))
            yield names
        if self.proto:
            yield any_of("protocol", [self.proto])
        for column, wanted in (("packet_id", packets), ("flow_id", flows)):
            if wanted:
                yield pc.fill_null(pc.is_in(table[column], value_set=pa.array(sorted(wanted), pa.uint64())), False)
        if self.compiled is not None:
            from tracer.cbpf_numpy import run
            from tracer.pcapng import build_headers

            headers, caplen, wirelen = build_headers(table)
            yield pa.array(run(self.compiled, headers, caplen, wirelen))

"""Rule hits joined to the journeys of the same packets.

A hit knows its packet by headers (tracer/rule_trace.py: IP id, total
length, TCP seq/ack or what stands for them, addresses and ports where it
was); a journey record by the same fingerprint and its address tuples (one
per NAT step). A hit joins the journey with the same fingerprint whose
addresses include the hit's and whose time fits: from just before its first
sighting to a few seconds after its last (the hit's time is when user space
read the report, so it is late, never early). Either may arrive first: each
waits for the other a while; hits that find no journey (traffic the nft
marking caught but the BPF filter did not trace, e.g. flows left out by
--sample) are counted and dropped.
"""

from __future__ import annotations

from collections import deque

import numpy as np

from tracer import addresses

# A hit is read after its packet's sighting (nf_tables runs between our
# hooks): allow clock skew between the two only.
EARLY_NS = 10_000_000
# A report can be read late: under load the reader falls seconds behind
# (measured: 3-4 s with ab -c 8 on the lab); the fingerprint and addresses
# keep the join exact over such a window.
LATE_NS = 10_000_000_000
# How long a hit waits for its journey's record (records reach user space in
# batches, and `record` writes them as they come).
WAIT_NS = 10_000_000_000


class RuleJoiner:
    def __init__(self) -> None:
        self.index: dict[tuple, list[tuple]] = {}  # fingerprint -> [(packet_id, first, last, addrs)]
        self.expiry: deque[tuple[int, tuple]] = deque()  # (expires at, fingerprint), in arrival order
        self.pending: list = []  # hits waiting for their journey
        self.unmatched = 0
        self.matched = 0

    def add_records(self, records: np.ndarray) -> None:
        """Journey records (events.JOURNEY_DTYPE), any parts of any packets."""
        if not len(records):
            return
        tcp = records["protocol"] == 6
        seq = np.where(tcp, records["tcp_seq"].astype(np.int64), 0)
        ack = np.where(tcp, records["tcp_ack"].astype(np.int64), 0)
        tuples = records["tuples"]
        cols = zip(records["packet_id"].tolist(), records["first_ktime"].tolist(), records["last_ktime"].tolist(),
                   records["protocol"].tolist(), records["ip_id"].tolist(), records["length"].tolist(),
                   seq.tolist(), ack.tolist(), records["n_tuples"].tolist(),
                   _address_ints(tuples["saddr"]), _address_ints(tuples["daddr"]),
                   tuples["sport"].tolist(), tuples["dport"].tolist())
        for pid, first, last, proto, ip_id, length, s, a, nt, sa, da, sp, dp in cols:
            key = (proto, ip_id, length, s, a)
            nt = max(1, min(nt, len(sa)))
            addrs = {(sa[i], da[i], sp[i], dp[i]) for i in range(nt)}
            self.index.setdefault(key, []).append((pid, first, last, addrs))
            self.expiry.append((last + LATE_NS, key))

    def add_hits(self, hits: list) -> None:
        self.pending += hits

    def match(self, now_ktime: int) -> list[tuple[int, object]]:
        """(packet_id, hit) for every waiting hit whose journey is known, in
        the order the hits came; forgets what is too old to join."""
        out, keep = [], []
        for hit in self.pending:
            pid = self._find(hit)
            if pid is not None:
                out.append((pid, hit))
            elif now_ktime - hit.ktime < WAIT_NS:
                keep.append(hit)
            else:
                self.unmatched += 1
        self.pending = keep
        self.matched += len(out)
        self._expire(now_ktime - WAIT_NS)
        return out

    def flush(self) -> list[tuple[int, object]]:
        """At the end: what joins now; the rest is unmatched."""
        out = self.match(0)  # now=0: nothing waits any longer, nothing expires
        self.unmatched += len(self.pending)
        self.pending = []
        return out

    def _find(self, hit) -> int | None:
        best = None
        for pid, first, last, addrs in self.index.get(hit.key, ()):
            if not first - EARLY_NS <= hit.ktime <= last + LATE_NS:
                continue
            if not any(s == hit.saddr and d == hit.daddr and (hit.key[0] == 1 or (sp == hit.sport and dp == hit.dport))
                       for s, d, sp, dp in addrs):
                continue
            if best is None or first > best[1]:  # the latest packet that fits
                best = (pid, first)
        return best[0] if best else None

    def _expire(self, before: int) -> None:
        while self.expiry and self.expiry[0][0] < before:
            _, key = self.expiry.popleft()
            entries = self.index.get(key)
            if entries:
                entries[:] = [e for e in entries if e[2] + LATE_NS >= before]
                if not entries:
                    del self.index[key]


def _address_ints(addrs: np.ndarray) -> list[list[int]]:
    """Recorded 16-byte addresses ((n, tuples, 16) bytes) as the integers a
    rule hit holds (rule_trace.packet_facts): an IPv4 address's 32 bits (the
    last four bytes of its IPv4-mapped form), an IPv6 address's 128.
    Vectorised for IPv4; IPv6 ones (never in a hit) one by one."""
    raw = np.ascontiguousarray(addrs, np.uint8)
    flat = addresses.as_rows(raw)
    v4 = (flat[:, :12] == _V4_PREFIX).all(axis=1) | ~flat[:, :12].any(axis=1)  # unused tuples are zeros: 0 either way
    ints = flat[:, 12:].copy().view(">u4").ravel().astype(object)
    for i in np.flatnonzero(~v4).tolist():
        ints[i] = int.from_bytes(flat[i].tobytes(), "big")
    return ints.reshape(raw.shape[:-1]).tolist()


_V4_PREFIX = np.frombuffer(addresses.V4_PREFIX, np.uint8)

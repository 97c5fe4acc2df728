"""Latency mode: per-segment histograms kept in the kernel (bpf/latency.h).

The kernel adds the time between consecutive sightings of a packet to a
histogram per segment (pair of hop codes) in an mmap-able BPF array; here we
map that array, take a snapshot once per interval, and turn the difference
between snapshots into packets, p50/p90/p99 and max per segment. Nothing per
packet crosses into user space.

Buckets: values below 16 ns are exact; above, each power of two is split into
16 linear sub-buckets (an HDR-histogram-like layout), so a bucket is at most
6.25% of its value wide and interpolated percentiles are within a few percent.
"""

from __future__ import annotations

import mmap
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

import numpy as np

from tracer import hdr
from tracer.kernel.hop_codes import HIST_BUCKETS, HIST_SUB_BITS, HOP_NAMES, N_HOPS, SUB

N_SEGMENTS = N_HOPS * N_HOPS
HIST_ROWS = N_SEGMENTS + 3  # + end-to-end rows for directions 1 (original) and 2 (reply)
E2E_ROWS = {"original": N_SEGMENTS + 1, "reply": N_SEGMENTS + 2}
DROP = HOP_NAMES.index("drop")
# Where a packet's way through this host ends (as in journeys.TERMINAL_SIGHTINGS).
TERMINAL = frozenset({HOP_NAMES.index("tc_ingress@container"), HOP_NAMES.index("tc_egress@external"),
                      HOP_NAMES.index("nf_input/after")})
ARROW = "→"


def bucket_of(value: int) -> int:
    """The bucket the kernel puts a value (ns) in: hist_bucket() in latency.h."""
    if value < SUB:
        return int(value)
    msb = int(value).bit_length() - 1
    sub = (int(value) >> (msb - HIST_SUB_BITS)) & (SUB - 1)
    return min((msb - HIST_SUB_BITS + 1) * SUB + sub, HIST_BUCKETS - 1)


def bucket_bounds(bucket: np.ndarray | int) -> tuple[np.ndarray, np.ndarray]:
    """[lower, upper) of buckets, in ns."""
    b = np.asarray(bucket, dtype=np.int64)
    exp = b // SUB
    sub = b % SUB
    shift = np.maximum(exp - 1, 0)
    lower = np.where(b < SUB, b, (SUB + sub) << shift)
    width = np.where(b < SUB, 1, 1 << shift)
    return lower, lower + width


_LOWER, _UPPER = bucket_bounds(np.arange(HIST_BUCKETS))


def percentile(counts: np.ndarray, q: float) -> float:
    """q-th percentile (0-100) of a bucket histogram, interpolated linearly
    inside the bucket that holds it."""
    total = counts.sum()
    if total == 0:
        return float("nan")
    rank = q / 100.0 * total
    cum = np.cumsum(counts)
    b = int(np.searchsorted(cum, rank, side="left"))
    b = min(b, len(counts) - 1)
    before = cum[b] - counts[b]
    inside = (rank - before) / counts[b] if counts[b] else 0.0
    return float(_LOWER[b] + inside * (_UPPER[b] - _LOWER[b]))


@dataclass(frozen=True)
class Stats:
    packets: int
    p50: float
    p90: float
    p99: float
    max: float

    @classmethod
    def of(cls, counts: np.ndarray) -> "Stats":
        nonzero = np.flatnonzero(counts)
        top = float(_UPPER[nonzero[-1]]) if len(nonzero) else float("nan")
        return cls(int(counts.sum()), percentile(counts, 50), percentile(counts, 90), percentile(counts, 99), top)

    def to_dict(self) -> dict:
        return {"packets": self.packets, "p50_ns": _num(self.p50), "p90_ns": _num(self.p90),
                "p99_ns": _num(self.p99), "max_ns": _num(self.max)}


def _num(v: float):
    return None if v != v else round(v, 1)


def segment_name(row: int) -> str:
    return f"{HOP_NAMES[row // N_HOPS]} {ARROW} {HOP_NAMES[row % N_HOPS]}"


@dataclass
class Snapshot:
    hist: np.ndarray  # (HIST_ROWS, HIST_BUCKETS)
    hops: np.ndarray  # (2, N_HOPS): sightings, packets first seen there
    ktime_ns: int

    def __sub__(self, other: "Snapshot") -> "Snapshot":
        return Snapshot(self.hist - other.hist, self.hops - other.hops, self.ktime_ns - other.ktime_ns)


def sparse_buckets(counts: np.ndarray) -> list[list[int]]:
    """A bucket histogram as [[bucket_index, count], ...], nonzero buckets only
    (the form a capture's histogram rows keep)."""
    nonzero = np.flatnonzero(counts)
    return [[int(b), int(counts[b])] for b in nonzero]


def dense_buckets(pairs, out: np.ndarray | None = None) -> np.ndarray:
    """[[bucket_index, count], ...] back to a HIST_BUCKETS array; added to
    ``out`` if given (so many intervals merge exactly by summing)."""
    if out is None:
        out = np.zeros(HIST_BUCKETS, dtype=np.int64)
    if pairs:
        arr = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
        np.add.at(out, arr[:, 0], arr[:, 1])
    return out


def _stats_dict(counts: np.ndarray, include_buckets: bool) -> dict:
    d = Stats.of(counts).to_dict()
    if include_buckets:
        d["buckets"] = sparse_buckets(counts)
        d["hdr"] = hdr.encode_buckets(counts)  # the same counts, readable by HdrHistogram's own tools
    return d


def report(delta: Snapshot, total: Snapshot, include_buckets: bool = False) -> dict:
    """One interval: per-segment stats of `delta`; missing counts from `total`
    (since start, so packets in flight at an interval edge do not count).
    With ``include_buckets`` each segment and end-to-end entry also carries
    its nonzero buckets (``sparse_buckets``): what `latency -w` records."""
    segments = []
    for row in np.flatnonzero(delta.hist[:N_SEGMENTS].sum(axis=1)):
        segments.append({"segment": segment_name(int(row)), "from": HOP_NAMES[row // N_HOPS],
                         "to": HOP_NAMES[row % N_HOPS], **_stats_dict(delta.hist[row], include_buckets)})
    end_to_end = {d: _stats_dict(delta.hist[r], include_buckets) for d, r in E2E_ROWS.items() if delta.hist[r].sum()}
    return {
        "seconds": delta.ktime_ns / 1e9,
        "packets": int(delta.hops[1].sum()),
        "segments": segments,
        "end_to_end": end_to_end,
        "missing": missing_after(total),
        "sightings": {HOP_NAMES[h]: int(n) for h, n in enumerate(total.hops[0]) if n},
    }


def merge_intervals(infos: Iterable[Mapping[str, Any]]) -> dict:
    """The info dicts of a capture's histogram rows (in capture order) as one
    report: each segment's buckets summed over every interval (exact, the
    same as one long interval), then packets/p50/p90/p99/max from the sum.

    ``missing`` and ``sightings`` count since the start of a recording, so a
    recording's last row holds its totals; rows of several recordings (the
    interval number starts again at 1) add up their last rows."""
    segments: dict[str, tuple[str, str, np.ndarray]] = {}
    end_to_end: dict[str, np.ndarray] = {}
    missing: dict[str, int] = {}
    sightings: dict[str, int] = {}
    last_of_run: dict | None = None
    previous_number = None
    intervals, seconds, packets = 0, 0.0, 0

    def close_run() -> None:
        if last_of_run is not None:
            for out, key in ((missing, "missing"), (sightings, "sightings")):
                for hop, n in (last_of_run.get(key) or {}).items():
                    out[hop] = out.get(hop, 0) + int(n)

    for info in infos:
        number = info.get("interval")
        if previous_number is not None and number is not None and number <= previous_number:
            close_run()
        previous_number = number
        last_of_run = info
        intervals += 1
        seconds += float(info.get("seconds") or 0.0)
        packets += int(info.get("packets") or 0)
        for seg in info.get("segments") or ():
            name = seg["segment"]
            if name not in segments:
                segments[name] = (seg.get("from"), seg.get("to"), np.zeros(HIST_BUCKETS, dtype=np.int64))
            dense_buckets(seg.get("buckets"), segments[name][2])
        for direction, e2e in (info.get("end_to_end") or {}).items():
            counts = end_to_end.setdefault(direction, np.zeros(HIST_BUCKETS, dtype=np.int64))
            dense_buckets(e2e.get("buckets"), counts)
    close_run()

    seg_out = [{"segment": name, "from": a, "to": b, **Stats.of(counts).to_dict(), "hdr": hdr.encode_buckets(counts)}
               for name, (a, b, counts) in segments.items() if counts.any()]
    seg_out.sort(key=lambda s: (-s["packets"], s["segment"]))
    return {
        "intervals": intervals,
        "seconds": seconds,
        "packets": packets,
        "segments": seg_out,
        "end_to_end": {d: {**Stats.of(end_to_end[d]).to_dict(), "hdr": hdr.encode_buckets(end_to_end[d])}
                       for d in ("original", "reply") if d in end_to_end and end_to_end[d].any()},
        "missing": missing,
        "sightings": sightings,
    }


def missing_after(total: Snapshot) -> dict[str, int]:
    """Packets seen at a hop that never reached a next one (drops included as
    the segment 'hop → drop', so they are not missing): where packets vanish."""
    per_segment = total.hist[:N_SEGMENTS].sum(axis=1).reshape(N_HOPS, N_HOPS)
    left = per_segment.sum(axis=1)
    out = {}
    for hop in range(N_HOPS):
        if hop in TERMINAL or hop == DROP:
            continue
        gone = int(total.hops[0][hop] - left[hop])
        if gone > 0:
            out[HOP_NAMES[hop]] = gone
    return out


class LatencyMaps:
    """The kernel's histogram arrays, mapped read-only."""

    def __init__(self, bpf, slices: int) -> None:
        self.slices = slices  # per-CPU copies, summed here (hist_slice in latency.h)
        self._hist = _map_array(bpf["hist"].map_fd, slices * HIST_ROWS * HIST_BUCKETS)
        self._hops = _map_array(bpf["hop_counts"].map_fd, slices * 2 * N_HOPS)

    def snapshot(self, ktime_ns: int) -> Snapshot:
        n = self.slices
        hist = np.frombuffer(self._hist, dtype="<u8", count=n * HIST_ROWS * HIST_BUCKETS)
        hist = hist.reshape(n, HIST_ROWS, HIST_BUCKETS).sum(axis=0, dtype=np.int64)
        hops = np.frombuffer(self._hops, dtype="<u8", count=n * 2 * N_HOPS).reshape(n, 2, N_HOPS).sum(axis=0, dtype=np.int64)
        # The kernel counts only starts; sightings at a hop = starts there +
        # arrivals from any previous hop (bpf/latency.h).
        hops[0] = hops[1] + hist[:N_SEGMENTS].sum(axis=1).reshape(N_HOPS, N_HOPS).sum(axis=0)
        return Snapshot(hist, hops, ktime_ns)

    def close(self) -> None:
        self._hist.close()
        self._hops.close()


def _map_array(fd: int, entries: int) -> mmap.mmap:
    size = (entries * 8 + mmap.PAGESIZE - 1) // mmap.PAGESIZE * mmap.PAGESIZE
    return mmap.mmap(fd, size, mmap.MAP_SHARED, mmap.PROT_READ)

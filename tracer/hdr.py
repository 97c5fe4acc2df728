"""HdrHistogram's standard encoding (V2, compressed, base64: the "HISTFAAA..."
strings of HdrHistogram logs), so histograms tracer records are read by
HdrHistogram's own tools (Java, C, Go, JavaScript, Python) without tracer.

Latency mode's buckets (tracer/latency.py: values below 32 ns exact, each
power of two above split into 16 linear sub-buckets) are exactly the layout of
an HdrHistogram with 1 significant digit and a lowest discernible value of 1:
kernel bucket i is HdrHistogram counts index i, so the conversion is a copy,
not an approximation. Values are nanoseconds.

The format, as HdrHistogram's Java AbstractHistogram writes it (big-endian):
compressed cookie, zlib length, then zlib of: cookie, payload length,
normalizing index offset, significant digits, lowest discernible value,
highest trackable value, integer-to-double ratio, and the counts from index 0
to the highest nonzero one as ZigZag LEB128 varints, where a run of N > 1 zero
counts is written as -N.
"""

from __future__ import annotations

import base64
import struct
import zlib
from dataclasses import dataclass

import numpy as np

ENCODING_COOKIE = 0x1C849303 | 0x10  # V2, word size indicator as Java writes it
COMPRESSED_COOKIE = 0x1C849304 | 0x10
_HEADER = struct.Struct(">iiiiqqd")  # cookie, payload length, offset, digits, lowest, highest, ratio

# The layout of latency mode's buckets (see the module docstring).
SIGNIFICANT_DIGITS = 1
LOWEST = 1
SUB_BUCKET_HALF_COUNT = 16
# 640 buckets (latency.HIST_BUCKETS) reach 2^43 ns: the highest trackable value
# whose counts array is exactly 640 long.
HIGHEST = (1 << 43) - 1


class HdrError(ValueError):
    """Not an HdrHistogram V2 encoding this module reads."""


@dataclass
class Decoded:
    counts: np.ndarray  # int64 per counts index
    significant_digits: int
    lowest: int
    highest: int

    @property
    def total(self) -> int:
        return int(self.counts.sum())


def _zigzag_varints(values: np.ndarray) -> bytes:
    out = bytearray()
    for v in values.tolist():
        z = ((v << 1) ^ (v >> 63)) & 0xFFFFFFFFFFFFFFFF
        for _ in range(8):
            if z < 0x80:
                break
            out.append((z & 0x7F) | 0x80)
            z >>= 7
        else:
            out.append(z & 0xFF)  # the 9th byte carries 8 bits (HdrHistogram's ZigZagEncoding)
            continue
        out.append(z)
    return bytes(out)


def _runs(counts: np.ndarray) -> np.ndarray:
    """Counts up to the last nonzero one, runs of more than one zero as -N."""
    nonzero = np.flatnonzero(counts)
    if not len(nonzero):
        return np.zeros(0, dtype=np.int64)
    c = np.asarray(counts[: nonzero[-1] + 1], dtype=np.int64)
    out: list[int] = []
    i, n = 0, len(c)
    while i < n:
        if c[i]:
            out.append(int(c[i]))
            i += 1
            continue
        j = i
        while j < n and c[j] == 0:
            j += 1
        out.append(0 if j - i == 1 else -(j - i))
        i = j
    return np.array(out, dtype=np.int64)


def encode(counts: np.ndarray, significant_digits: int = SIGNIFICANT_DIGITS, lowest: int = LOWEST,
           highest: int = HIGHEST) -> str:
    """Base64 of the compressed V2 encoding of an HdrHistogram's counts array."""
    if (np.asarray(counts) < 0).any():
        raise HdrError("negative count")
    body = _zigzag_varints(_runs(np.asarray(counts)))
    payload = _HEADER.pack(ENCODING_COOKIE, len(body), 0, significant_digits, lowest, highest, 1.0) + body
    packed = zlib.compress(payload)
    return base64.b64encode(struct.pack(">ii", COMPRESSED_COOKIE, len(packed)) + packed).decode("ascii")


def encode_buckets(counts: np.ndarray) -> str:
    """A latency-mode bucket histogram (latency.HIST_BUCKETS counts) in the
    standard encoding: the same counts, since the layouts are one."""
    return encode(counts)


def _read_varints(data: bytes, length: int) -> list[int]:
    out, pos = [], 0
    while pos < length:
        z, shift = 0, 0
        for k in range(9):
            if pos >= length:
                raise HdrError("truncated counts")
            b = data[pos]
            pos += 1
            if k == 8:
                z |= b << 56
                break
            z |= (b & 0x7F) << shift
            shift += 7
            if not b & 0x80:
                break
        out.append((z >> 1) ^ -(z & 1))
    return out


def decode(text: str) -> Decoded:
    """The counts of a base64 compressed V2 encoding (what ``encode`` writes,
    and what HdrHistogram's tools write with the default settings)."""
    try:
        raw = base64.b64decode(text.strip(), validate=True)
        cookie, length = struct.unpack_from(">ii", raw)
    except (ValueError, struct.error):
        raise HdrError("not base64 of an HdrHistogram encoding") from None
    if cookie & ~0xF0 != 0x1C849304 & ~0xF0:
        raise HdrError(f"cookie {cookie:#x} is not a compressed V2 encoding")
    try:
        payload = zlib.decompress(raw[8: 8 + length])
        c2, body_len, offset, digits, lowest, highest, _ratio = _HEADER.unpack_from(payload)
    except (zlib.error, struct.error):
        raise HdrError("damaged compressed payload") from None
    if c2 & ~0xF0 != 0x1C849303 & ~0xF0:
        raise HdrError(f"inner cookie {c2:#x} is not a V2 encoding")
    if offset:
        raise HdrError("normalizing index offset is not supported")
    counts: list[int] = []
    for v in _read_varints(payload[_HEADER.size:], body_len):
        counts.extend([0] * -v if v < 0 else [v])
    return Decoded(np.array(counts, dtype=np.int64), digits, lowest, highest)


# Histogram.index of 0 .. _DIRECT - 1 per digits, made when first needed (8 MB):
# hop latencies (below a millisecond or so) are one gather; larger values
# take frexp (_index). The one table: nothing is built on import.
_DIRECT = 1 << 20
_INDEX: dict[int, np.ndarray] = {}
_COARSER: dict[tuple[int, int], np.ndarray] = {}  # Histogram.coarser_index, per (digits, other's digits)


class Histogram:
    """An HdrHistogram counts array (lowest discernible value 1, ``digits``
    significant digits, values up to HIGHEST ns), recorded with numpy and
    read the way HdrHistogram reads it (value at percentile: the highest value
    equivalent to the count at that rank), so what tracer draws from it and
    what HdrHistogram's tools say about its encoding agree."""

    _layouts: dict[int, tuple[int, int]] = {}  # digits -> (sub-bucket count magnitude, counts length)

    def __init__(self, digits: int = 3) -> None:
        self.digits = digits
        if digits not in self._layouts:
            magnitude = int(np.ceil(np.log2(2 * 10 ** digits)))
            buckets, untrackable = 1, 1 << magnitude
            while untrackable <= HIGHEST:
                untrackable <<= 1
                buckets += 1
            self._layouts[digits] = (magnitude, (buckets + 1) << (magnitude - 1))
        magnitude, length = self._layouts[digits]
        self._mag = magnitude
        self._half_mag = magnitude - 1
        self._half = 1 << (magnitude - 1)
        self.counts = np.zeros(length, dtype=np.int64)

    def index(self, values: np.ndarray) -> np.ndarray:
        """Counts index of each value (AbstractHistogram.countsArrayIndex)."""
        v = np.asarray(values, dtype=np.int64)
        if len(v) and int(v.min()) >= 0 and int(v.max()) < _DIRECT:  # hop latencies: a gather
            table = _INDEX.get(self.digits)
            if table is None:
                table = _INDEX[self.digits] = self._index(np.arange(_DIRECT, dtype=np.int64))
            return table[v]
        return self._index(v)

    def _index(self, values: np.ndarray) -> np.ndarray:
        v = np.clip(values, 0, HIGHEST)
        # The bucket is the bit length of v >> magnitude, which is the bit
        # length of v with its low magnitude bits set, less magnitude:
        # frexp's exponent (exact below 2^53). Values below _DIRECT come
        # from the table instead (index).
        bits = np.frexp((v | ((1 << self._mag) - 1)).astype(np.float64))[1]
        bucket = bits.astype(np.int64) - self._mag
        return bucket * self._half + (v >> bucket)

    def coarser_index(self, other: "Histogram") -> np.ndarray:
        """Per counts index of this histogram, ``other``'s index of the same
        values (``other`` of fewer digits): each bucket here lies inside one
        there (both are power-of-two ranges aligned on their width), so
        ``coarser_index(other)[self.index(v)] == other.index(v)``, one gather
        instead of a second ``index``."""
        key = (self.digits, other.digits)
        lut = _COARSER.get(key)
        if lut is None:
            low, _ = self._lowest(np.arange(len(self.counts)))
            lut = _COARSER[key] = other.index(np.minimum(low, HIGHEST))
        return lut

    def record(self, values: np.ndarray) -> None:
        if len(values):
            self.counts += np.bincount(self.index(values), minlength=len(self.counts))

    def add(self, other: "Histogram") -> None:
        self.counts += other.counts

    @property
    def total(self) -> int:
        return int(self.counts.sum())

    def _lowest(self, index: np.ndarray) -> np.ndarray:
        i = np.asarray(index, dtype=np.int64)
        bucket = (i >> self._half_mag) - 1
        sub = (i & (self._half - 1)) + self._half
        first = bucket < 0
        sub = np.where(first, sub - self._half, sub)
        bucket = np.where(first, 0, bucket)
        return sub << bucket, np.int64(1) << bucket  # lowest equivalent value, bucket width

    def values_at(self, percentiles) -> np.ndarray:
        """Value (ns) at each percentile (0-100), HdrHistogram's way; NaN when empty."""
        q = np.atleast_1d(np.asarray(percentiles, dtype=np.float64))
        total = self.total
        if not total:
            return np.full(len(q), np.nan)
        rank = np.maximum(np.ceil(np.clip(q, 0, 100) / 100.0 * total), 1)
        idx = np.searchsorted(np.cumsum(self.counts), rank, side="left")
        low, width = self._lowest(idx)
        return np.where(q == 0, low, low + width - 1).astype(np.float64)

    def value_at(self, percentile: float) -> float:
        return float(self.values_at([percentile])[0])

    @property
    def max(self) -> float:
        nonzero = np.flatnonzero(self.counts)
        if not len(nonzero):
            return float("nan")
        low, width = self._lowest(nonzero[-1])
        return float(low + width - 1)

    def encode(self) -> str:
        return encode(self.counts, self.digits, LOWEST, HIGHEST)

"""HdrHistogram's standard encoding (tracer/hdr.py), read back by our decoder
and by the HdrHistogram package from PyPI (an implementation of its own)."""

from __future__ import annotations

import numpy as np
import pytest

from tracer import hdr, latency

hdrh = pytest.importorskip("hdrh.histogram", reason="the hdrhistogram test dependency (pip install -e '.[test]')")


def _values(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.concatenate([rng.integers(0, 40, 300), rng.lognormal(9, 1.6, 4000).astype(np.int64),
                           [0, 31, 32, 33, 5_000_000_000, (1 << 42) + 5]])


def _buckets(values: np.ndarray) -> np.ndarray:
    counts = np.zeros(latency.HIST_BUCKETS, dtype=np.int64)
    for v in values.tolist():
        counts[latency.bucket_of(v)] += 1
    return counts


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_kernel_buckets_are_hdrhistogram_counts(seed):
    """The same values recorded by HdrHistogram itself (1 significant digit,
    lowest 1) land in the same counts indexes as latency mode's buckets, and
    each side reads the other's encoding of them."""
    values = _values(seed)
    ref = hdrh.HdrHistogram(hdr.LOWEST, hdr.HIGHEST, hdr.SIGNIFICANT_DIGITS)
    for v in values.tolist():
        ref.record_value(v)
    assert ref.counts_len == latency.HIST_BUCKETS
    theirs = np.array([ref.get_count_at_index(i) for i in range(ref.counts_len)])
    ours = _buckets(values)
    assert (theirs == ours).all()
    mine = hdrh.HdrHistogram.decode(hdr.encode_buckets(ours))
    assert [mine.get_count_at_index(i) for i in range(mine.counts_len)] == theirs.tolist()
    assert mine.get_value_at_percentile(99) == ref.get_value_at_percentile(99)
    encoded = ref.encode()
    back = hdr.decode(encoded.decode() if isinstance(encoded, bytes) else encoded)
    assert back.counts.tolist() == ours[: len(back.counts)].tolist() and back.total == ours.sum()


def test_round_trip_and_their_reader():
    counts = _buckets(_values(7))
    text = hdr.encode_buckets(counts)
    assert text.startswith("HISTFAAA")  # the compressed V2 cookie, as in HdrHistogram logs
    back = hdr.decode(text)
    assert (back.counts == counts[: len(back.counts)]).all() and not counts[len(back.counts):].any()
    assert (back.significant_digits, back.lowest, back.highest) == (1, 1, hdr.HIGHEST)
    theirs = hdrh.HdrHistogram.decode(text)
    assert theirs.get_total_count() == counts.sum()
    # percentiles as HdrHistogram reports them fall in the bucket latency mode's percentile interpolates in
    for q in (50, 90, 99, 99.9):
        ours = latency.percentile(counts, q)
        lo, hi = latency.bucket_bounds(latency.bucket_of(int(ours)))
        assert lo <= theirs.get_value_at_percentile(q) < hi + (hi - lo), q


def test_runs_of_zeros_and_big_counts():
    counts = np.zeros(latency.HIST_BUCKETS, dtype=np.int64)
    counts[[0, 2, 3, 400, 639]] = [1, 1 << 40, 5, 7, (1 << 56) + 3]  # a 9-byte varint, a lone zero, long runs
    back = hdr.decode(hdr.encode_buckets(counts))
    assert (back.counts == counts).all()
    theirs = hdrh.HdrHistogram.decode(hdr.encode_buckets(counts))
    assert theirs.get_total_count() == counts.sum()


def test_empty_and_bad_input():
    assert hdr.decode(hdr.encode_buckets(np.zeros(latency.HIST_BUCKETS, dtype=np.int64))).total == 0
    for bad in ("", "not base64!", "AAAAAAAAAAAA", hdr.encode_buckets(np.ones(3, dtype=np.int64))[:-8] + "AAAAAAAA"):
        with pytest.raises(hdr.HdrError):
            hdr.decode(bad)
    with pytest.raises(hdr.HdrError):
        hdr.encode(np.array([1, -1]))


@pytest.mark.parametrize("digits", [1, 2, 3])
def test_histogram_records_as_hdrhistogram_does(digits):
    """tracer.hdr.Histogram (what the report's paths use) puts values in the
    counts indexes HdrHistogram does; its value at a percentile is the
    bucket of the order statistic at rank ceil(q n), as HdrHistogram's Java
    implementation reads it, and its encoding is read by the PyPI package."""
    rng = np.random.default_rng(digits)
    values = np.concatenate([rng.lognormal(8, 2, 20000).astype(np.int64), [0, 1, 2047, 2048, 2049, 10**12]])
    ours = hdr.Histogram(digits)
    ours.record(values[:7000])
    rest = hdr.Histogram(digits)
    rest.record(values[7000:])
    ours.add(rest)  # merging is adding counts
    ref = hdrh.HdrHistogram(hdr.LOWEST, hdr.HIGHEST, digits)
    for v in values.tolist():
        ref.record_value(v)
    assert len(ours.counts) == ref.counts_len
    assert ours.counts.tolist() == [ref.get_count_at_index(i) for i in range(ref.counts_len)]
    ordered = np.sort(values)
    for q in (0, 1, 25, 50, 75, 90, 99, 99.9, 100):
        exact = ordered[max(int(np.ceil(q / 100 * len(ordered))), 1) - 1]
        assert ours.index([ours.value_at(q)])[0] == ours.index([exact])[0], q
    assert ours.max == ref.get_max_value()
    theirs = hdrh.HdrHistogram.decode(ours.encode())
    assert theirs.get_total_count() == len(values)
    assert hdr.Histogram(digits).value_at(50) != hdr.Histogram(digits).value_at(50)  # empty: NaN


@pytest.mark.parametrize("digits", [1, 2, 3])
def test_index_by_table_and_coarser_index_are_the_formula(digits):
    """Values below 2^20 (hop latencies) get their index from a table, the
    rest from the formula the test above pins to HdrHistogram: the same
    indexes, at the table's edges too; and a finer histogram's index mapped
    through coarser_index is the coarser histogram's own index of the value."""
    ours = hdr.Histogram(digits)
    small = np.arange(1 << 20)
    assert (ours.index(small) == ours._index(small)).all()
    rng = np.random.default_rng(digits)
    mixed = np.concatenate([rng.integers(-5, 1 << 45, 100_000), rng.integers(0, 1 << 21, 100_000),
                            [-1, 0, (1 << 20) - 1, 1 << 20, hdr.HIGHEST, hdr.HIGHEST + 1, 1 << 62],
                            1 << np.arange(62), (1 << np.arange(1, 62)) - 1])
    assert (ours.index(mixed) == ours._index(mixed)).all()
    assert (ours.index(mixed[mixed >= 0] % (1 << 20)) == ours._index(mixed[mixed >= 0] % (1 << 20))).all()
    for coarse in range(1, digits):
        lut = ours.coarser_index(hdr.Histogram(coarse))
        assert (lut[ours.index(mixed)] == hdr.Histogram(coarse).index(mixed)).all()
        assert (lut[ours.index(small)] == hdr.Histogram(coarse).index(small)).all()


@pytest.mark.parametrize("digits", [1, 3])
def test_index_is_hdrhistograms_counts_array_index_at_every_power_of_two(digits):
    """AbstractHistogram.countsArrayIndex written out with Python integers
    (bucket from the leading zeros of value | subBucketMask) against the
    table and frexp paths, at each power of two and either side of it."""
    ours = hdr.Histogram(digits)
    mag, half = ours._mag, ours._half
    values = sorted({max(0, min(p + d, hdr.HIGHEST)) for p in (1 << k for k in range(44)) for d in (-1, 0, 1)})

    def java(v: int) -> int:
        bucket = (v | ((1 << mag) - 1)).bit_length() - mag
        return ((bucket + 1) << (mag - 1)) + ((v >> bucket) - half)

    assert ours.index(np.array(values)).tolist() == [java(v) for v in values]
    assert not any(isinstance(v, np.ndarray) and v.nbytes > 1 << 16 for v in vars(hdr).values()), \
        "a table built on import"

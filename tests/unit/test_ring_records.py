"""The ring buffer's records walked into fixed rows (tracer/drain.py
_copy_records and its compiled twin tracer._native ring_records): journey
records as long as the hops they use, each padded back to the struct with
zeros; discarded records skipped; the walk stops at a record still being
written and at a record too long for a row. Synthetic ring bytes laid out
as kernel/bpf/ringbuf.c writes them; no kernel needed."""

from __future__ import annotations

import struct

import numpy as np
import pytest

from tracer import events
from tracer.drain import BUSY_BIT, DISCARD_BIT, HEADER_SIZE, _copy_records
from tracer.native import native

ROW = events.JOURNEY_SIZE
HOP = events.HOP_DTYPE.itemsize


def _walkers():
    mod = native(warn=False)
    return [pytest.param(_copy_records, id="python")] + (
        [pytest.param(mod.ring_records, id="native")] if mod is not None else [])


def _journey(i: int, n_hops: int) -> np.ndarray:
    r = np.zeros(1, events.JOURNEY_DTYPE)
    r["packet_id"] = 1000 + i
    r["n_hops"] = n_hops
    r["n_tuples"] = 1
    r["hops"]["ifindex"][0, :n_hops] = np.arange(1, n_hops + 1) + 100 * i
    r["hops"]["code"][0, :n_hops] = 3
    return r


def _ring(samples: list[tuple[bytes, int]], lead: int = 16) -> tuple[bytearray, int]:
    """Header + sample (padded to 8) per (sample bytes, header flag bits),
    after ``lead`` bytes of another record's tail; (ring, start)."""
    ring = bytearray(b"\xee" * lead)
    for data, bits in samples:
        ring += struct.pack("<II", len(data) | bits, 0) + data
        ring += b"\xee" * (-len(ring) % 8)  # padding the kernel leaves as it was
    return ring + b"\xee" * 64, lead


def _sample(r: np.ndarray) -> bytes:
    """The bytes the kernel emits of record r: up to its last hop used."""
    return r.tobytes()[:events.JOURNEY_HEADER + HOP * int(r["n_hops"][0])]


@pytest.mark.parametrize("walk", _walkers())
def test_journey_records_of_any_length_come_out_as_whole_rows(walk):
    recs = [_journey(i, n) for i, n in enumerate((0, 1, 5, 16, 9))]
    ring, start = _ring([(_sample(r), 0) for r in recs])
    avail = len(ring) - start - 64
    out = np.full(8 * ROW, 0x55, np.uint8)
    rows, walked, bad = walk(ring, start, avail, out, ROW, 8)
    assert (rows, walked, bad) == (5, avail, 0)
    got = out[:rows * ROW].view(events.JOURNEY_DTYPE)
    assert got.tobytes() == b"".join(r.tobytes() for r in recs), "each row: the record's bytes, the rest zeros"
    assert (out[rows * ROW:] == 0x55).all(), "nothing written past the rows"


@pytest.mark.parametrize("walk", _walkers())
def test_discarded_skipped_and_a_busy_record_ends_the_walk(walk):
    a, b, c, d = (_journey(i, 4) for i in range(4))
    ring, start = _ring([(_sample(a), 0), (_sample(b), DISCARD_BIT), (_sample(c), 0), (_sample(d), BUSY_BIT)])
    out = np.zeros(4 * ROW, np.uint8)
    rows, walked, bad = walk(ring, start, len(ring) - start - 64, out, ROW, 4)
    assert (rows, bad) == (2, 0)
    assert out[:2 * ROW].view(events.JOURNEY_DTYPE)["packet_id"].tolist() == [1000, 1002]
    one = -(-(HEADER_SIZE + len(_sample(a))) // 8) * 8
    assert walked == 3 * one, "the consumer moves past the discarded record, not into the busy one"


@pytest.mark.parametrize("walk", _walkers())
def test_max_rows_and_avail_bound_the_walk(walk):
    recs = [_journey(i, 2) for i in range(3)]
    ring, start = _ring([(_sample(r), 0) for r in recs])
    one = -(-(HEADER_SIZE + len(_sample(recs[0]))) // 8) * 8
    out = np.zeros(3 * ROW, np.uint8)
    assert walk(ring, start, 3 * one, out, ROW, 2)[:2] == (2, 2 * one)
    assert walk(ring, start, one + 8, out, ROW, 3)[:2] == (1, one), "a record past avail is not read"


@pytest.mark.parametrize("walk", _walkers())
def test_a_record_longer_than_a_row_stops_the_walk_and_is_reported(walk):
    ring, start = _ring([(_sample(_journey(0, 3)), 0), (b"\x01" * (ROW + 8), 0)])
    out = np.zeros(2 * ROW, np.uint8)
    rows, walked, bad = walk(ring, start, len(ring) - start - 64, out, ROW, 2)
    assert (rows, bad) == (1, ROW + 8)
    assert walked == -(-(HEADER_SIZE + len(_sample(_journey(0, 3)))) // 8) * 8

"""kernel/counts.per_cpu_sums on a kernel without a batch lookup for
per-CPU arrays: the failure is remembered per map (its fd and the kernel's
id of the map, in counts.py, not on the table object), so every later read
goes entry by entry at once instead of trying the batch call (and failing)
first, whichever table object reads the map (BCC's, map_table.MapTable, one
made anew); an fd that now holds another map is tried afresh. No kernel:
the batch call is replaced by one that fails as such a kernel's does
(ENOTSUPP, 524), the map ids come from a dict, and the table is a dict of
per-CPU values. On real maps: tests/e2e/test_counter_batch.py."""

from __future__ import annotations

import ctypes

import pytest

from tracer.kernel import counts


class Table:
    """Per-CPU values by key, as a BCC or MapTable table gives them; takes
    no attributes of its own (as a table with __slots__ would not)."""

    __slots__ = ("map_fd", "values", "__weakref__")
    Key = ctypes.c_uint32

    def __init__(self, fd: int, values: list[list[int]]) -> None:
        self.map_fd = fd
        self.values = values

    def __getitem__(self, key):
        return self.values[key.value]


@pytest.fixture
def kernel(monkeypatch):
    """fd -> map id (the stand-in kernel's), and the batch calls made, each failing."""
    ids = {7: 100, 8: 101}
    calls = []

    def no_batch(fd, entries, cpus):
        calls.append(fd)
        raise OSError(524, "Unknown error 524")

    def info(fd):
        if fd not in ids:
            raise OSError(9, "Bad file descriptor")
        return type("Info", (), {"id": ids[fd]})()

    monkeypatch.setattr(counts.sc, "per_cpu_u64_array", no_batch)
    monkeypatch.setattr(counts.sc, "map_info_by_fd", info)
    monkeypatch.setattr(counts, "_NO_BATCH_LOOKUP", {})
    return ids, calls


def test_a_failed_batch_lookup_is_tried_once_per_map(kernel):
    ids, calls = kernel
    first, second = Table(7, [[1, 2], [3, 4], [5, 6]]), Table(8, [[10, 0], [0, 20]])
    for _ in range(3):
        assert counts.per_cpu_sums(first, 3) == [3, 7, 11]
    assert calls == [7]  # tried once, then entry by entry
    assert counts.per_cpu_sums(second, 2) == [10, 20]
    assert calls == [7, 8]  # another map is tried on its own
    assert counts.per_cpu_sums(Table(7, [[1, 1]]), 1) == [2]  # the same map through a new table object
    assert calls == [7, 8]


def test_an_fd_that_holds_another_map_now_is_tried_afresh(kernel):
    ids, calls = kernel
    assert counts.per_cpu_sums(Table(7, [[1, 2]]), 1) == [3]
    ids[7] = 102  # the map closed, its fd number reused by a new map
    assert counts.per_cpu_sums(Table(7, [[4, 5]]), 1) == [9]
    assert calls == [7, 7]
    del ids[8]  # no id to remember the map by: tried again next time (never a wrong record)
    counts.per_cpu_sums(Table(8, [[1]]), 1)
    counts.per_cpu_sums(Table(8, [[1]]), 1)
    assert calls == [7, 7, 8, 8]


def test_a_working_batch_lookup_is_used_every_time(monkeypatch):
    calls = []

    def batch(fd, entries, cpus):
        calls.append(fd)
        return [42] * entries

    monkeypatch.setattr(counts.sc, "per_cpu_u64_array", batch)
    table = Table(9, [[1], [2]])
    assert counts.per_cpu_sums(table, 2) == [42, 42]
    assert counts.per_cpu_sums(table, 2) == [42, 42]
    assert calls == [9, 9]


def test_a_marked_map_read_through_the_same_table_costs_no_bpf_call(kernel, monkeypatch):
    """The map id is asked for when the fd is seen through another table
    object, not on every read (one bpf() call a read a map, every pass and
    status line, on the kernels this is for)."""
    ids, calls = kernel
    asked = []
    info = counts.sc.map_info_by_fd
    monkeypatch.setattr(counts.sc, "map_info_by_fd", lambda fd: asked.append(fd) or info(fd))
    table = Table(7, [[1, 2], [3, 4]])
    counts.per_cpu_sums(table, 2)
    assert calls == [7] and asked == [7]  # failed: the map's id kept
    for _ in range(3):
        assert counts.per_cpu_sums(table, 2) == [3, 7]
    assert calls == [7] and asked == [7]
    again = Table(7, [[1, 2]])  # the same map through another table object: its id checked once
    for _ in range(3):
        assert counts.per_cpu_sums(again, 1) == [3]
    assert calls == [7] and asked == [7, 7]
    first = Table(8, [[1]])
    counts.per_cpu_sums(first, 1)
    ids[8] = 103  # closed, its fd reused by a new map: read through a new table object (its address may be the old one's)
    del first
    assert counts.per_cpu_sums(Table(8, [[2]]), 1) == [2]
    assert calls == [7, 8, 8]


def test_an_fd_found_reused_by_two_readers_at_once_is_no_error(kernel, monkeypatch):
    """The drain and the status line may both find that a marked fd holds
    another map now: the second to forget it finds it gone (no KeyError)."""
    ids, calls = kernel
    counts.per_cpu_sums(Table(7, [[1]]), 1)
    ids[7] = 102  # the fd reused by a new map
    info = counts.sc.map_info_by_fd

    def other_reader_first(fd):
        counts._NO_BATCH_LOOKUP.pop(fd, None)  # the other thread saw the reuse and forgot the fd meanwhile
        return info(fd)

    monkeypatch.setattr(counts.sc, "map_info_by_fd", other_reader_first)
    assert counts.per_cpu_sums(Table(7, [[4, 5]]), 1) == [9]
    assert calls == [7, 7]

"""kernel/counts.per_cpu_sums on a kernel without a batch lookup for
per-CPU arrays: the failure is remembered per map, so every later read goes
entry by entry at once instead of trying the batch call (and failing) first.
No kernel: the batch call is replaced by one that fails as such a kernel's
does (ENOTSUPP, 524), and the table is a dict of per-CPU values."""

from __future__ import annotations

import ctypes

from tracer.kernel import counts


class Table:
    """Per-CPU values by key, as a BCC or MapTable table gives them."""

    Key = ctypes.c_uint32

    def __init__(self, fd: int, values: list[list[int]]) -> None:
        self.map_fd = fd
        self.values = values

    def __getitem__(self, key):
        return self.values[key.value]


def test_a_failed_batch_lookup_is_tried_once_per_map(monkeypatch):
    calls = []

    def no_batch(fd, entries, cpus):
        calls.append(fd)
        raise OSError(524, "Unknown error 524")

    monkeypatch.setattr(counts.sc, "per_cpu_u64_array", no_batch)
    first, second = Table(7, [[1, 2], [3, 4], [5, 6]]), Table(8, [[10, 0], [0, 20]])
    for _ in range(3):
        assert counts.per_cpu_sums(first, 3) == [3, 7, 11]
    assert calls == [7]  # tried once, then entry by entry
    assert counts.per_cpu_sums(second, 2) == [10, 20]
    assert calls == [7, 8]  # another map is tried on its own


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

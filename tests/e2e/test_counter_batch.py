"""The kernel's per-CPU counters read in one batch lookup
(bpf_syscall.per_cpu_u64_array, kernel/counts.per_cpu_sums) give what a
lookup per entry gives, on a real per-CPU array map of this kernel."""

from __future__ import annotations

import ctypes
import os
import random

import pytest

from tracer.kernel import bpf_syscall as sc
from tracer.kernel import counts
from tracer.kernel.cpus import possible_cpus
from tracer.kernel.map_table import BPF_MAP_TYPE_PERCPU_ARRAY, MapTable

ENTRIES = 11


@pytest.fixture
def per_cpu_map():
    fd = sc.map_create(BPF_MAP_TYPE_PERCPU_ARRAY, 4, 8, ENTRIES, b"trc_test_cnt9")
    try:
        yield fd
    finally:
        os.close(fd)


def _fill(fd: int, rng: random.Random) -> list[list[int]]:
    cpus = possible_cpus()
    written = []
    for key in range(ENTRIES):
        per_cpu = [rng.randrange(1 << 40) for _ in range(cpus)]
        sc.map_update(fd, ctypes.c_uint32(key), (ctypes.c_uint64 * cpus)(*per_cpu))
        written.append(per_cpu)
    return written


def test_one_batch_lookup_sums_every_entry_over_cpus(per_cpu_map):
    written = _fill(per_cpu_map, random.Random(9))
    assert sc.per_cpu_u64_array(per_cpu_map, ENTRIES, possible_cpus()) == [sum(v) for v in written]
    # fewer entries than the map holds: the first ones
    assert sc.per_cpu_u64_array(per_cpu_map, 4, possible_cpus()) == [sum(v) for v in written[:4]]


def test_more_entries_than_the_map_holds_is_an_error_not_a_short_read(per_cpu_map):
    with pytest.raises(OSError):
        sc.per_cpu_u64_array(per_cpu_map, ENTRIES + 1, possible_cpus())


def test_counts_read_the_same_batched_as_entry_by_entry(per_cpu_map):
    written = _fill(per_cpu_map, random.Random(10))
    table = MapTable("counters", per_cpu_map, BPF_MAP_TYPE_PERCPU_ARRAY, ENTRIES, ctypes.c_uint32, ctypes.c_uint64)
    batched = counts.per_cpu_sums(table, ENTRIES)

    class NoFd:  # a table without a map fd (as a test double would be): read entry by entry
        Key = table.Key

        def __getitem__(self, key):
            return table[key]

    assert batched == counts.per_cpu_sums(NoFd(), ENTRIES) == [sum(v) for v in written]


def test_a_failed_batch_lookup_is_remembered_by_the_table(per_cpu_map, monkeypatch):
    """On a kernel without the batch lookup (the call made to fail as it
    does there): read entry by entry, the same values, and not tried again
    through the same table object (the one a module hands out a map)."""
    written = _fill(per_cpu_map, random.Random(11))
    calls = []

    def no_batch(fd, entries, cpus):
        calls.append(fd)
        raise OSError(524, "Unknown error 524")

    monkeypatch.setattr(counts.sc, "per_cpu_u64_array", no_batch)
    table = MapTable("counters", per_cpu_map, BPF_MAP_TYPE_PERCPU_ARRAY, ENTRIES, ctypes.c_uint32, ctypes.c_uint64)
    for _ in range(2):
        assert counts.per_cpu_sums(table, ENTRIES) == [sum(v) for v in written]
    assert calls == [per_cpu_map]

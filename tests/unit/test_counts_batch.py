"""kernel/counts.per_cpu_sums on a kernel without a batch lookup for
per-CPU arrays: the failure is remembered on the table object (BCC's
module and ours hand out one a map), so every later read through it goes
entry by entry at once instead of trying the batch call (and failing)
first; another table is tried on its own. No kernel: the batch call is
replaced by one that fails as such a kernel's does (ENOTSUPP, 524), and
the table is a list of per-CPU values. Any other error (ENOMEM, EINTR, a
short read) costs only the read it happened in. On real maps:
tests/e2e/test_counter_batch.py."""

from __future__ import annotations

import ctypes
import errno
import os

import pytest

from tracer.kernel import counts


class Table:
    """Per-CPU values by key, as a BCC or MapTable table gives them."""

    Key = ctypes.c_uint32

    def __init__(self, fd: int, values: list[list[int]]) -> None:
        self.map_fd = fd
        self.values = values

    def __getitem__(self, key):
        return self.values[key.value]


class SlotTable:
    """The same, taking no attribute of its own."""

    __slots__ = ("map_fd", "values")
    Key = Table.Key
    __init__ = Table.__init__
    __getitem__ = Table.__getitem__


@pytest.fixture
def calls(monkeypatch):
    """The batch calls made, each failing."""
    made = []

    def no_batch(fd, entries, cpus):
        made.append(fd)
        raise OSError(524, "Unknown error 524")

    monkeypatch.setattr(counts.sc, "per_cpu_u64_array", no_batch)
    return made


def test_a_failed_batch_lookup_is_tried_once_per_table(calls):
    first, second = Table(7, [[1, 2], [3, 4], [5, 6]]), Table(8, [[10, 0], [0, 20]])
    for _ in range(3):
        assert counts.per_cpu_sums(first, 3) == [3, 7, 11]
    assert calls == [7]  # tried once, then entry by entry
    assert counts.per_cpu_sums(second, 2) == [10, 20]
    assert calls == [7, 8]  # another table is tried on its own
    assert counts.per_cpu_sums(Table(7, [[1, 1]]), 1) == [2]  # a table made anew: tried afresh
    assert calls == [7, 8, 7]


def test_a_table_that_takes_no_attribute_is_tried_every_read(calls):
    table = SlotTable(9, [[1, 2]])
    for _ in range(2):
        assert counts.per_cpu_sums(table, 1) == [3]
    assert calls == [9, 9]


def test_a_working_batch_lookup_is_used_every_time(monkeypatch):
    made = []

    def batch(fd, entries, cpus):
        made.append(fd)
        return [42] * entries

    monkeypatch.setattr(counts.sc, "per_cpu_u64_array", batch)
    table = Table(9, [[1], [2]])
    assert counts.per_cpu_sums(table, 2) == [42, 42]
    assert counts.per_cpu_sums(table, 2) == [42, 42]
    assert made == [9, 9]


@pytest.mark.parametrize("code", [errno.ENOMEM, errno.EINTR, errno.EAGAIN, errno.ENOENT, errno.EFAULT])
def test_a_transient_batch_failure_costs_that_read_only(monkeypatch, code):
    """An error that is not the kernel refusing batch lookups (memory short,
    a signal, a short read) reads entry by entry that once, is counted on
    the table, and the next read tries the batch again."""
    made, fail = [], [True]

    def flaky(fd, entries, cpus):
        made.append(fd)
        if fail[0]:
            raise OSError(code, os.strerror(code))
        return [42] * entries

    monkeypatch.setattr(counts.sc, "per_cpu_u64_array", flaky)
    table = Table(7, [[1, 2], [3, 4]])
    assert counts.per_cpu_sums(table, 2) == [3, 7]  # this read: entry by entry
    assert table.batch_lookup_failures == 1 and not getattr(table, "no_batch_lookup", False)
    assert counts.per_cpu_sums(table, 2) == [3, 7]
    assert table.batch_lookup_failures == 2
    fail[0] = False
    assert counts.per_cpu_sums(table, 2) == [42, 42]  # the batch again once it works
    assert made == [7, 7, 7]
    assert table.batch_lookup_failures == 0  # counted in a row


@pytest.mark.parametrize("code", [errno.EPERM, errno.EACCES, errno.EFAULT])
def test_a_batch_failure_that_never_passes_switches_the_table_after_some_reads(monkeypatch, code):
    """EPERM on a map fd without read access (say): not a failed bpf() call
    on every pass for the rest of the run."""
    made = []

    def failing(fd, entries, cpus):
        made.append(fd)
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(counts.sc, "per_cpu_u64_array", failing)
    table = Table(7, [[1, 2]])
    for _ in range(3 * counts.BATCH_FAILURES_IN_A_ROW):
        assert counts.per_cpu_sums(table, 1) == [3]
    assert len(made) == counts.BATCH_FAILURES_IN_A_ROW and table.no_batch_lookup


@pytest.mark.parametrize("code", [errno.EINVAL, errno.EOPNOTSUPP, 524])
def test_not_supported_switches_the_table_for_good(monkeypatch, code):
    made = []

    def unsupported(fd, entries, cpus):
        made.append(fd)
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(counts.sc, "per_cpu_u64_array", unsupported)
    table = Table(7, [[1, 2]])
    for _ in range(3):
        assert counts.per_cpu_sums(table, 1) == [3]
    assert made == [7] and table.no_batch_lookup and not getattr(table, "batch_lookup_failures", 0)

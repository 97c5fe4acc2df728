"""The possible CPUs: per-CPU values are counted, CPU-id arrays are sized to the largest id + 1."""

from __future__ import annotations

from tracer.kernel import cpus


def test_cpu_lists_with_and_without_holes():
    assert cpus.parse_cpu_list("0-3\n") == (0, 1, 2, 3)
    assert cpus.parse_cpu_list("0,2-4") == (0, 2, 3, 4)
    assert cpus.parse_cpu_list("5") == (5,)


def test_a_list_with_holes_counts_fewer_values_than_its_id_bound(monkeypatch):
    monkeypatch.setattr(cpus, "possible_cpu_ids", lambda: (0, 2, 3))
    assert cpus.possible_cpus() == 3 and cpus.cpu_id_bound() == 4


def test_this_machine_has_cpu_zero():
    ids = cpus.possible_cpu_ids()
    assert ids[0] == 0 and cpus.possible_cpus() == len(ids) <= cpus.cpu_id_bound()

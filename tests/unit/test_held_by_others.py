"""tests/e2e/tracing.py's leak check: a program or link counts as another
process's (not a leak of ours) only if held in two looks apart, so a process
that opens an fd to every program for a moment cannot hide a leak."""

from tests.e2e import tracing


def test_only_ids_held_both_times_count():
    first = ({1, 2, 3}, {10, 11})
    second = ({2, 3, 4}, {11})
    assert tracing.held_both_times(first, second) == ({2, 3}, {11})


def test_a_holder_seen_once_does_not_hide_a_leaked_program(monkeypatch):
    """The first look catches a lister holding every program (ours, 7,
    leaked, among them); the second only the steady holder of 5."""
    looks = iter([({5, 7}, {50, 70}), ({5}, {50})])
    monkeypatch.setattr(tracing, "_held_by_others_now", lambda: next(looks))
    assert tracing.held_by_others(gap=0) == ({5}, {50})

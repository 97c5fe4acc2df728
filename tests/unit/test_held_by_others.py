"""tests/e2e/tracing.py's leak check: a program or link counts as another
process's (not a leak of ours) only if held in two looks apart, so a process
that opens an fd to every program for a moment cannot hide a leak."""

from types import SimpleNamespace

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


def test_objects_that_appear_while_holders_are_looked_for_are_not_ours(monkeypatch):
    """wait_gone's pass lists the candidates, then their holders, then lists
    again: a program and link loaded in between (another tracer starting,
    its holder not looked for) are not counted; a candidate let go in
    between is gone; one still there, held by nobody else, is a leak."""
    P = lambda i: SimpleNamespace(id=i, name="trc_x")  # noqa: E731
    L = lambda i: SimpleNamespace(id=i, prog_id=i - 100)  # noqa: E731
    listings = iter([([P(1), P(2), P(3)], [L(101), L(102)]),  # the candidates (1 and 101 were there before)
                     ([P(1), P(3), P(4)], [L(101), L(102), L(104)])])  # after the holders: 2 gone, 4/104 new
    monkeypatch.setattr(tracing, "our_kernel_objects", lambda: next(listings))
    monkeypatch.setattr(tracing, "held_by_others", lambda: (set(), set()))
    progs, links = tracing.wait_gone(({1}, {101}), timeout=0)
    assert [p.id for p in progs] == [3] and [link.id for link in links] == [102]

"""tracer.side_thread: calls run in order on one other thread; an error is
raised in the caller; a failing caller stops the thread without running
what was queued."""

from __future__ import annotations

import threading
import time

import pytest

from tracer.side_thread import SideThread


def test_calls_run_in_order_on_another_thread():
    seen, threads = [], set()

    def note(i):
        time.sleep(0.001 * (i % 3))  # uneven work: order must not depend on it
        seen.append(i)
        threads.add(threading.get_ident())

    with SideThread(depth=2) as side:
        for i in range(50):
            side.submit(note, i)
    assert seen == list(range(50))
    assert threads and threading.get_ident() not in threads


def test_an_error_reaches_the_caller_and_later_calls_are_not_run():
    ran = []

    def boom():
        raise ValueError("bad chunk")

    side = SideThread(depth=1)
    side.submit(boom)
    with pytest.raises(ValueError, match="bad chunk"):
        for i in range(100):  # raised at a later submit, or at close
            side.submit(ran.append, i)
        side.close()
    side.close()  # the error is raised once; the thread is gone
    assert len(ran) == 0


def test_a_failing_caller_stops_the_thread_and_keeps_its_own_error():
    ran, gate = [], threading.Event()
    with pytest.raises(KeyError):
        with SideThread(depth=4) as side:
            side.submit(gate.wait)
            for i in range(4):
                side.submit(ran.append, i)
            # The gate opens only after the caller has failed (its __exit__
            # marks the thread stopped at once, then waits for it): every
            # queued call comes after the failure and none may run.
            opener = threading.Timer(0.2, gate.set)
            opener.start()
            raise KeyError("caller")
    assert not side._thread.is_alive()
    assert gate.is_set()  # the thread waited for the gate, then skipped the rest
    assert ran == []  # what was still queued was skipped

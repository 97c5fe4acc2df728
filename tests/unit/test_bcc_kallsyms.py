"""tracer/kernel/bcc_kallsyms.py without mount namespaces: which BCC
versions get the answer, the compile on a thread of its own (its result
and its exception handed to the caller), and a thread that cannot take a
namespace of its own (unshare or the mount refused) leaving BCC the real
file. The real namespaces and compiles: tests/e2e/test_bcc_kallsyms.py."""

from __future__ import annotations

import threading

import pytest

from tracer.kernel import bcc_kallsyms as bk


def test_the_answer_is_only_for_the_bcc_versions_known_to_ask_nothing_else(monkeypatch):
    monkeypatch.delenv("TRACER_BCC_KALLSYMS", raising=False)
    assert bk.known("0.26.0")
    for other in ("0.30.0", "0.2", "0.260.1", "0.25.0"):
        assert not bk.known(other), other
    monkeypatch.setenv("TRACER_BCC_KALLSYMS", "0")
    assert not bk.known("0.26.0")
    assert bk.ANSWER.split() == ["ffffffff81000000", "T", "bpf_probe_read_kernel"]


class FakeLibc:
    """unshare and mount as the kernel may answer them."""

    def __init__(self, unshare: int = 0, mount: int = 0) -> None:
        self.results = {"unshare": unshare, "mount": mount}
        self.calls: list[str] = []

    def __getattr__(self, name):
        def call(*args):
            self.calls.append(name)
            return self.results.get(name, 0)
        return call


@pytest.mark.parametrize("refused", ["unshare", "mount"])
def test_a_refused_namespace_still_compiles_on_its_own_thread(monkeypatch, refused):
    """BCC then reads the real file; the caller's thread is never touched."""
    monkeypatch.delenv("TRACER_BCC_KALLSYMS", raising=False)
    libc = FakeLibc(**{refused: -1})
    monkeypatch.setattr(bk.ctypes, "CDLL", lambda *a, **k: libc)
    assert not bk._answer_in_this_thread()
    ran_on = []
    assert bk.call_answered("0.26.0", lambda: ran_on.append(threading.current_thread()) or "module") == "module"
    assert ran_on[0] is not threading.current_thread() and ran_on[0].name == "bpf-compile"
    assert libc.calls[0] == "unshare" and "setns" not in libc.calls


def test_the_compiles_exception_is_raised_in_the_caller(monkeypatch):
    monkeypatch.delenv("TRACER_BCC_KALLSYMS", raising=False)
    monkeypatch.setattr(bk, "_answer_in_this_thread", lambda: True)

    def refused():
        raise RuntimeError("Failed to compile BPF module <text>")

    with pytest.raises(RuntimeError, match="Failed to compile"):
        bk.call_answered("0.26.0", refused)


def test_another_bcc_compiles_on_the_callers_thread(monkeypatch):
    monkeypatch.setattr(bk, "_answer_in_this_thread", lambda: pytest.fail("a namespace for an unknown BCC"))
    assert bk.call_answered("0.30.0", threading.current_thread) is threading.current_thread()

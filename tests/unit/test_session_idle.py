"""An idle poll (no records drained) costs no decode work: the empty table
is decoded once and reused; records are always decoded."""

from tracer import events
from tracer import session as S
from tracer.decode import DecodeContext


def test_empty_polls_decode_once(monkeypatch):
    calls = []
    real = S.decode

    def counting(raw, ctx):
        calls.append(len(raw))
        return real(raw, ctx)

    monkeypatch.setattr(S, "decode", counting)
    s = S.TraceSession(S.TraceOptions(S.Targets(ports=(8000,))))
    s.ctx = DecodeContext(host_netns=1, drop_reasons={})
    first = s._decode(events.empty_raw())
    again = s._decode(events.empty_raw())
    assert calls == [0] and again is first and first.num_rows == 0
    assert s._decode(events.empty_raw(1)).num_rows == 1
    assert calls == [0, 1]

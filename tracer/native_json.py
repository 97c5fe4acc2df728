"""The journey JSON lines by the compiled loop (native/journey_json.c):
the arguments it takes, from JourneyRows. Every string is JSON-encoded here
once per distinct value, by the same json.dumps the Python path
(tracer/journey_json.py) uses, so escaping has one author; the C copies
those texts and formats the numbers (ids, times, netns, ports, dt) and the
endpoints ('ip:port', '[ip6]:port', the address alone for ICMP)."""

from __future__ import annotations

from functools import lru_cache

from tracer.journey_rows import JourneyRows, _dumps
from tracer.native import i64, u64
from tracer.journeys import _DIRECTION_NAMES, VERDICTS, _flags_text


def native_json_block(jr: JourneyRows, module, into=None, ends=None, at: int = 0) -> bytes | int:
    """The JSON lines of ``jr``'s journeys, each ended by a newline, as
    journey_json.journey_json_block's Python path writes them. With
    ``into`` (a bytearray, grown as needed) the text goes at its start and
    its length is returned; with another writable buffer it goes from byte
    ``at`` on, and a buffer too small returns minus the size needed (grow
    it and call again). ``ends`` (an int64 array, one slot a journey) gets
    each line's newline offset (from the text's start)."""
    journeys = (
        u64(jr.packet_id), u64(jr.flow_id), i64(jr.wall_ns), i64(jr.direction), i64(jr.protocol.codes),
        i64(jr.tcp_flags_key()), i64(jr.container_of), i64(jr.verdict), i64(jr.reason), i64(jr.starts),
    )
    hops = (
        i64(jr.hook.codes), i64(jr.stage.codes), i64(jr.ifname.codes), i64(jr.netns), i64(jr.container.codes),
        *map(i64, jr.src), *map(i64, jr.dst), i64(jr.dt), i64(jr.container_id.codes), i64(jr.ktime),
    )
    texts = (
        _DIRECTIONS, _texts(jr.protocol.values), _flag_texts(), _texts(jr.container.values), _VERDICTS,
        _texts(jr.drop_reason.values), _texts(jr.hook.values), _texts(jr.stage.values), _texts(jr.ifname.values),
        _texts(jr.src_ip), _texts(jr.dst_ip), _texts(jr.container_id.values),
    )
    return module.journey_json(journeys, hops, texts, into, ends, at)


@lru_cache(maxsize=1 << 12)
def _json(value) -> bytes:
    return _dumps(value).encode()


def _texts(values: list) -> list[bytes]:
    return [_json(v) for v in values]


_DIRECTIONS = [_json(v) for v in _DIRECTION_NAMES.tolist()]
_VERDICTS = [_json(v) for v in VERDICTS]


@lru_cache(maxsize=1)
def _flag_texts() -> list[bytes]:
    """Per TCP flags byte its JSON text; 256 (not TCP): null (tcp_flags_key)."""
    return [_json(_flags_text(f)) for f in range(256)] + [b"null"]

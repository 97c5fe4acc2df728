"""The human journey text by the compiled loop (native/journey_text.c): the
arguments it takes, from JourneyRows. Every name is escaped for the terminal
here (tracer/text.py) once per distinct value, colour codes come from
click.style, and times half-way between two shown digits go back to
format_dt: the C lays out, pads and numbers; it decides nothing the Python
path (tracer/render_rows.py) decides differently, and the tests compare
their bytes."""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from tracer.journey_rows import JourneyRows, _canonical, _lut
from tracer.native import i64, u64
from tracer.journeys import VERDICTS, _flags_text
from tracer.render import _NAT_STYLE, _VERDICT_STYLE, NAT_NAMES, _style_parts, format_dt
from tracer.text import printable



def native_text_block(jr: JourneyRows, color: bool, module, into=None, at: int = 0) -> bytes | int:
    """render_rows(jr, color)'s bytes. With ``into`` (a writable buffer) they
    go from byte ``at`` on and their length is returned; a buffer too small
    returns minus the size needed (grow it and call again)."""
    hook, stage = jr.hook, jr.stage
    n_stage = len(stage.values)
    journeys = (
        u64(jr.packet_id), u64(jr.flow_id), i64(jr.wall_ns), i64(jr.direction), i64(jr.protocol.codes),
        i64(jr.tcp_flags_key()), i64(jr.container_of), i64(jr.container_to), i64(jr.verdict), i64(jr.reason),
        i64(jr.last_seen), i64(jr.starts),
    )
    is_drop = _lut(hook.values, lambda v: v == "drop")[hook.codes]
    hops = (
        i64(hook.codes), i64(stage.codes), i64(jr.ifname.codes), i64(jr.container.codes), *map(i64, jr.src),
        *map(i64, jr.dst), i64(jr.dt), i64(jr.drop_reason.codes), i64(is_drop),
    )
    reasons = _names(jr.drop_reason.values)
    texts = (
        _hook_stage(tuple(hook.values), tuple(stage.values)),
        [(printable(v) if v else "-").encode() for v in jr.ifname.values],
        [_name(v).encode() for v in jr.container.values],
        _addresses(jr.src_ip), _addresses(jr.dst_ip),
        [r.encode() for r in reasons],
        [(r or "dropped").encode() for r in reasons],
        [(v or "?").encode() for v in jr.protocol.values],
        _flag_texts(),
        _DIRECTIONS,
        *_styled(color),
    )
    keys = (_address_keys(jr.src_ip), _address_keys(jr.dst_ip))
    return module.journey_text(journeys, hops, texts, keys, n_stage, format_dt, into, at)


def _name(value) -> str:
    """A container or drop reason name as shown ('' for none)."""
    return printable(value) if value else ""


def _names(values: list) -> list[str]:
    return [_name(v) for v in values]


@lru_cache(maxsize=256)
def _hook_stage(hooks: tuple, stages: tuple) -> list[bytes]:
    """Per (hook, stage) code pair, hook * len(stages) + stage: 'hook/stage' or 'hook'."""
    return [(f"{h}/{s}" if s else f"{h}").encode() for h in hooks for s in stages]


def _addresses(values: list) -> list[bytes]:
    return [(v if v is not None else "?").encode() for v in values]


def _address_keys(values: list) -> np.ndarray:
    """Per address code, one key per distinct address (a dictionary built
    from several chunks repeats values); -1 for none."""
    return np.where(np.array([v is None for v in values], bool), -1, _canonical(values)).astype(np.int64)


_DIRECTIONS = [b"?", b"original", b"reply"]


@lru_cache(maxsize=1)
def _flag_texts() -> list[bytes]:
    """Per TCP flags byte its text; 256 (not TCP): nothing (tcp_flags_key)."""
    return [_flags_text(f).encode() for f in range(256)] + [b""]


@lru_cache(maxsize=2)
def _styled(color: bool) -> tuple[list[bytes], list[bytes], list[bytes], list[bytes]]:
    """(verdict with its style on, its style off, NAT label by code, [bold on,
    bold off, red on, red off]), as render_rows styles them."""
    on, off = [], []
    for verdict in VERDICTS:
        vs = _style_parts(color, **_VERDICT_STYLE.get(verdict, {}))
        on.append((vs[0] + verdict).encode())
        off.append(vs[1].encode())
    nat_style = _style_parts(color, **_NAT_STYLE)
    nat = [("  " + nat_style[0] + NAT_NAMES[c] + nat_style[1]).encode() if c in NAT_NAMES else b"" for c in range(8)]
    bold, red = _style_parts(color, bold=True), _style_parts(color, fg="red", bold=True)
    return on, off, nat, [s.encode() for s in (*bold, *red)]

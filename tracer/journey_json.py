"""Journeys as JSON lines (the README's journey contract): the text of a
batch's journeys glued from per-distinct-value fragments, one contiguous
slice per packet (tracer/journey_rows.py computes the columns)."""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from tracer.addresses import endpoint
from tracer.ids import id_texts
from tracer.wallclock import split_times
from tracer.journey_rows import JourneyRows, _dumps, _factorize, _mixed_radix, journey_rows
from tracer.journeys import _DIRECTION_NAMES, VERDICTS, _flags_text
from tracer.native import native


def journey_json_lines(table: pa.Table) -> list[str]:
    """One JSON line per journey, in order of first sighting: for each packet
    exactly ``json.dumps(journey.to_json_dict())`` of build_journeys(table)."""
    jr = journey_rows(table)
    if not len(jr):
        return []
    pieces, line_starts = _json_pieces(jr, newline=False)
    data, offsets = _string_buffer(pieces)
    at = offsets[line_starts].tolist()
    text = bytes(data[at[0] : at[-1]])
    return [text[s - at[0] : e - at[0]].decode() for s, e in zip(at[:-1], at[1:])]


def journey_json_block(table: pa.Table, compiled: bool = True) -> tuple[memoryview, int]:
    """The same lines, each ended by a newline, as one UTF-8 buffer (and how
    many lines): for writing straight out, without a Python str per hop or
    per line. By the compiled loop where it was built (tracer/native.py,
    ``compiled``: unless False), else by the Python path below: the same
    bytes."""
    block, count, _ = journey_json_text(table, compiled)
    return block, count


def journey_json_text(table: pa.Table, compiled: bool = True, into=None) -> tuple[memoryview, int, np.ndarray]:
    """journey_json_block's (block, count) and where each line ends: the
    offset of its newline in the block (proxy notes cut lines there:
    tracer/proxy_output.py). ``into``: a bytearray the compiled loop writes
    the text into, grown as needed and kept by the caller from one batch to
    the next (its pages stay mapped), or the direct output's stage
    (tracer/direct_output.py: ``buffer``, ``at``, ``ensure``), where the
    text goes at ``at``, right where the output writes it from; the block
    is then a view of it, good until the next call with it."""
    jr = journey_rows(table)
    if not len(jr):
        return memoryview(b""), 0, np.empty(0, np.int64)
    # Hops without a ktime_ns (a damaged capture's: null dt_ns) are written below, not by the compiled loop.
    module = native() if compiled and jr.timed is None else None
    ends = np.empty(len(jr), np.int64)
    if module is not None:
        from tracer.native_json import native_json_block

        if into is None:
            return memoryview(native_json_block(jr, module, None, ends)), len(jr), ends
        if isinstance(into, bytearray):
            size = native_json_block(jr, module, into, ends)
            return memoryview(into)[:size], len(jr), ends
        from tracer.direct_output import written_in

        return written_in(into, lambda buffer, at: native_json_block(jr, module, buffer, ends, at)), len(jr), ends
    pieces, line_starts = _json_pieces(jr, newline=True)
    data, offsets = _string_buffer(pieces)
    at = offsets[line_starts]
    ends[:] = at[1:] - at[0] - 1
    return data[int(at[0]) : int(at[-1])], len(jr), ends


def _string_buffer(arr: pa.StringArray) -> tuple[memoryview, np.ndarray]:
    """A string array's data buffer and its offsets (one per element, plus the end)."""
    offsets = np.frombuffer(arr.buffers()[1], np.int32, count=len(arr) + 1, offset=4 * arr.offset)
    return memoryview(arr.buffers()[2]), offsets


_PACKET_ID_KEY, _FLOW_ID_KEY, _NO_TIME = '{"packet_id": ', ', "flow_id": ', ""
_TIME_KEY, _KTIME_KEY = 'Z", "ktime_ns": ', ', "ktime_ns": '  # after a time, after none
_HEADER_PIECES = 9  # '{"packet_id": ', id, flow key, flow, time key + second, fraction, ktime key, ktime, the rest


def _json_pieces(jr: JourneyRows, newline: bool) -> tuple[pa.StringArray, np.ndarray]:
    """The JSON lines as string pieces which, back to back, are the text: per
    journey '{"packet_id": ', id, ', "flow_id": ', flow, ', "time": "' and
    its second (or ', "time": null'), its nanoseconds (or nothing), 'Z",
    "ktime_ns": ' (or without 'Z"'), ktime, the rest of its header; per hop
    its head (the previous hop's end, then hook .. "src": ), its addresses up
    to "dt_ns": , dt; then the last hop's end and ']}'. Everything but the
    numbers is formatted once per distinct value; one take of a pool of all
    the texts lays the pieces out. Also returns the piece where each line
    starts (plus the end)."""
    n, count = len(jr.rows), len(jr)
    heads, head_idx = _hop_heads(jr)
    pairs, pair_idx = _hop_addresses(jr)
    rests, rest_idx = _header_rests(jr)
    close = "]}\n" if newline else "]}"
    closings = [_end_text(v) + close for v in jr.container_id.values]
    # Times: '"2026-11-30T08:01:07.' once per distinct second, then 9 digits.
    known = jr.wall_ns != 0
    seconds, second_idx, fractions = split_times(jr.wall_ns, "%Y-%m-%dT%H:%M:%S.", 9)
    seconds = [f', "time": "{t}' for t in seconds] + [', "time": null']
    second_idx = np.where(known, second_idx, len(seconds) - 1)
    # The pool: the distinct texts, then the numbers formatted per row/journey.
    texts = [_PACKET_ID_KEY, _FLOW_ID_KEY, _TIME_KEY, _KTIME_KEY, _NO_TIME, *heads, *pairs, *closings, *rests, *seconds]
    head_at = 5
    pair_at = head_at + len(heads)
    close_at = pair_at + len(pairs)
    rest_at = close_at + len(closings)
    second_at = rest_at + len(rests)
    dt_at = second_at + len(seconds)
    pid_at = dt_at + n
    flow_at = pid_at + count
    fraction_at = flow_at + count
    ktime_at = fraction_at + count
    pool = pa.concat_arrays([
        pa.array(texts, pa.string()),
        _numbers_or_null(jr.dt, jr.timed),
        id_texts(jr.packet_id, json=True),  # ids as everywhere: hex text (tracer/ids.py)
        id_texts(jr.flow_id, json=True),  # 0: unknown -> null
        fractions,
        _numbers_or_null(jr.ktime[jr.starts[:-1]], None if jr.timed is None else jr.timed[jr.starts[:-1]]),
    ])
    # Ten pieces per journey (header: 9, closing: 1) and three per hop.
    H = _HEADER_PIECES
    journeys = np.arange(count)
    line_starts = (H + 1) * np.arange(count + 1) + 3 * jr.starts
    idx = np.empty(line_starts[-1], np.int64)
    at = line_starts[:-1]
    idx[at] = 0
    idx[at + 1] = pid_at + journeys
    idx[at + 2] = 1
    idx[at + 3] = flow_at + journeys
    idx[at + 4] = second_at + second_idx
    idx[at + 5] = np.where(known, fraction_at + journeys, 4)
    idx[at + 6] = np.where(known, 2, 3)
    idx[at + 7] = ktime_at + journeys
    idx[at + 8] = rest_at + rest_idx
    hop = (H + 1) * np.repeat(journeys, np.diff(jr.starts)) + H + 3 * np.arange(n)
    idx[hop] = head_at + head_idx
    idx[hop + 1] = pair_at + pair_idx
    idx[hop + 2] = dt_at + np.arange(n)
    idx[line_starts[1:] - 1] = close_at + jr.container_id.codes[jr.starts[1:] - 1]
    return pool.take(pa.array(idx)), line_starts


def _numbers_or_null(values: np.ndarray, known: np.ndarray | None) -> pa.Array:
    """Integers as JSON text; 'null' where not ``known`` (a hop without a ktime_ns)."""
    text = pc.cast(pa.array(values, pa.int64()), pa.string())
    return text if known is None else pc.if_else(pa.array(known), text, "null")


def _hop_heads(jr: JourneyRows) -> tuple[list[str], np.ndarray]:
    """Per hop: the previous hop's end (none on a journey's first hop) and
    its own text up to "src": , as distinct texts and each hop's index."""
    n = len(jr.rows)
    # hook .. container: one formatted prefix per distinct combination.
    ifn = jr.ifname
    ku, kidx = _factorize(
        _mixed_radix(
            [(jr.hook.codes, None), (jr.stage.codes, len(jr.stage.values)),
             (jr.container.codes, len(jr.container.values)), (ifn.codes, len(ifn.values))]
        )
    )
    nu, nidx = _factorize(jr.netns)
    hu, hidx = _factorize(kidx * len(nu) + nidx)
    n_if, n_c, n_st = len(ifn.values), len(jr.container.values), len(jr.stage.values)
    heads = []
    for h in hu.tolist():
        k, ns = divmod(h, len(nu))
        k, i = divmod(int(ku[k]), n_if)
        k, c = divmod(k, n_c)
        hk, st = divmod(k, n_st)
        heads.append(_head_text(jr.hook.values[hk], jr.stage.values[st], ifn.values[i], int(nu[ns]), jr.container.values[c]))
    # What closes the previous hop: nothing on a journey's first hop.
    cid_codes = jr.container_id.codes
    ends_sep = [_end_text(v) + ", " for v in jr.container_id.values] + [""]
    prev_end = np.empty(n, np.int64)
    prev_end[1:] = cid_codes[:-1]
    prev_end[jr.starts[:-1]] = len(ends_sep) - 1
    # (previous end, head) has few distinct values: formatted once each.
    eu, eidx = _factorize(prev_end * len(hu) + hidx)
    e_end, e_head = np.divmod(eu, len(hu))
    return [ends_sep[e] + heads[h] for e, h in zip(e_end.tolist(), e_head.tolist())], eidx


def _hop_addresses(jr: JourneyRows) -> tuple[list[str], np.ndarray]:
    """Per hop 'src, "dst": dst, "dt_ns": ', as distinct texts (once per
    distinct endpoint, then per distinct pair) and each hop's index."""
    pair, (s_keys, d_keys) = jr.pairs()
    return [f'{_endpoint_json(s, jr.src_ip)}, "dst": {_endpoint_json(d, jr.dst_ip)}, "dt_ns": '
            for s, d in zip(s_keys.tolist(), d_keys.tolist())], pair


def _endpoint_json(key: int, ips: list) -> str:
    return _endpoint_text(ips[key >> 17], (key >> 1) & 0xFFFF, key & 1)


# Formatted texts are cached across batches: the same few hooks, interfaces
# and endpoints recur in every poll.
@lru_cache(maxsize=1 << 16)
def _endpoint_text(ip: str | None, port: int, icmp: int) -> str:
    if ip is None:
        return "null"
    return _dumps(ip if icmp else endpoint(ip, port))


@lru_cache(maxsize=1 << 12)
def _head_text(hook, stage, ifname, netns: int, container) -> str:
    return (
        f'{{"hook": {_dumps(hook)}, "nat_stage": {_dumps(stage)}, "ifname": {_dumps(ifname)}, '
        f'"netns": {netns}, "container": {_dumps(container)}, "src": '
    )


@lru_cache(maxsize=1 << 12)
def _header_text(direction, protocol, flags: int, container, verdict: str, reason) -> str:
    return (
        f', "direction": {_dumps(direction)}, "protocol": {_dumps(protocol)}, '
        f'"tcp_flags": {_dumps(None if flags == 256 else _flags_text(flags))}, '
        f'"container": {_dumps(container)}, "verdict": {_dumps(verdict)}, '
        f'"drop_reason": {_dumps(reason)}, "hops": ['
    )


@lru_cache(maxsize=1 << 12)
def _end_text(container_id) -> str:
    return f', "container_id": {_dumps(container_id)}}}'


def _header_rests(jr: JourneyRows) -> tuple[list[str], np.ndarray]:
    """Per journey its header after the flow id (direction .. '"hops": ['),
    as distinct texts and each journey's index."""
    flags = jr.tcp_flags_key()  # 256: not TCP -> null
    key = _mixed_radix(
        [(jr.direction.astype(np.int64), None), (jr.protocol.codes, len(jr.protocol.values)), (flags, 257),
         (jr.container_of, len(jr.container.values)), (jr.verdict.astype(np.int64), 3),
         (jr.reason, len(jr.drop_reason.values))]
    )
    ku, kidx = _factorize(key)
    texts = []
    for k in ku.tolist():
        k, r = divmod(k, len(jr.drop_reason.values))
        k, v = divmod(k, 3)
        k, c = divmod(k, len(jr.container.values))
        k, f = divmod(k, 257)
        d, p = divmod(k, len(jr.protocol.values))
        texts.append(
            _header_text(_DIRECTION_NAMES[d], jr.protocol.values[p], f, jr.container.values[c], VERDICTS[v], jr.drop_reason.values[r])
        )
    return texts, kidx

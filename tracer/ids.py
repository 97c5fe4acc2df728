"""Packet and flow ids as people see them: one text form everywhere they are
printed (journey headers, stats and its CSV/JSON, the report, pcapng
comments, the journey JSON's `packet_id`/`flow_id`), and parsed back from it
for `show --packet/--flow`.

The form is the whole id in lower-case hex: unique (a packet id is a per-CPU
counter under the CPU number, a flow id a keyed hash of the conntrack entry),
short enough to read. Captures (Arrow, Parquet, `tracer sql`) keep the ids
as unsigned integer columns, for joins: the text is ``format(column, "x")``.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc


def format_id(value: int | None) -> str:
    """'20000000001'; '-' for none (0 means unknown)."""
    return format(int(value), "x") if value else "-"


def format_ids(values: np.ndarray) -> list[str]:
    """format_id of many ids, as a list."""
    values = np.asarray(values)
    if not len(values):
        return []
    return id_texts(values).to_pylist()



def _quads() -> np.ndarray:
    """Four hex digits per 16 bits: a uint32 per value, its bytes the ASCII
    digits (b"%04x" % value), built column-wise (a Python loop over the
    65,536 values cost ~12 ms of every start)."""
    values = np.arange(1 << 16, dtype=np.uint32)
    digits = np.frombuffer(b"0123456789abcdef", np.uint8)
    chars = np.stack([digits[(values >> shift) & 15] for shift in (12, 8, 4, 0)], axis=1)
    return np.ascontiguousarray(chars).reshape(-1).view(np.uint32)


_QUADS = _quads()
_QUOTE = ord('"')


def _hex_digits(v: np.ndarray) -> np.ndarray:
    """How many hex digits each value has (1 for 0): its bit length from
    frexp of its two 32-bit halves (each exact as a double)."""
    hi = (v >> np.uint64(32)).astype(np.float64)
    lo = (v & np.uint64(0xFFFFFFFF)).astype(np.float64)
    bits = np.where(hi > 0, 32 + np.frexp(hi)[1], np.frexp(lo)[1])
    return np.maximum((bits + 3) // 4, 1).astype(np.int64)


def id_texts(values: np.ndarray, json: bool = False) -> pa.StringArray:
    """format_id of every id, vectorised (no Python per id): '-' for 0, or
    with ``json`` the quoted hex ('"20000000001"') and 'null' for 0."""
    v = np.ascontiguousarray(values, dtype="<u8")  # a field of a structured array is strided
    n = len(v)
    q = 1 if json else 0
    chars = np.empty((n, 16 + 2 * q), np.uint8)
    # 16 digits, most significant first: the value's 16-bit words high to low.
    chars[:, q : q + 16] = _QUADS[v.view("<u2").reshape(n, 4)[:, ::-1]].view(np.uint8).reshape(n, 16)
    width = _hex_digits(v)
    start = 16 - width  # column of the opening quote, or of the first digit
    if json:
        chars[np.arange(n), start] = _QUOTE
        chars[:, -1] = _QUOTE
    if n and (width == width[0]).all():  # the usual batch: ids of one width, a plain slice
        size = int(width[0]) + 2 * q
        data = np.ascontiguousarray(chars[:, int(start[0]):])
        offsets = np.arange(0, size * (n + 1), size, dtype=np.int32)
    else:
        data = chars[np.arange(chars.shape[1]) >= start[:, None]]
        offsets = np.zeros(n + 1, np.int32)
        np.cumsum(width + 2 * q, out=offsets[1:])
    text = pa.StringArray.from_buffers(n, pa.py_buffer(offsets), pa.py_buffer(data))
    unknown = v == 0
    return pc.if_else(pa.array(unknown), "null" if json else "-", text) if unknown.any() else text


def parse_id(text: str) -> set[int]:
    """The ids a user may mean by ``text``: the printed hex form ('#' and
    '0x' allowed), and, for all-digit text, the decimal integer of a capture's
    columns (and of JSON and CSV written before ids were hex) as well.
    ValueError when it is neither."""
    t = text.strip().lower().lstrip("#")
    if t.startswith("0x"):
        t = t[2:]
    candidates = set()
    if t and all(c in "0123456789abcdef" for c in t):
        candidates.add(int(t, 16))
    if t.isdigit():
        candidates.add(int(t, 10))
    candidates.discard(0)
    if not candidates or any(c >= 1 << 64 for c in candidates):
        raise ValueError(f"{text!r} is not a packet or flow id (the hex shown by trace/show/stats, or a capture's integer)")
    return candidates

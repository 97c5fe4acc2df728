"""Packet and flow ids as people see them: one text form everywhere they are
printed (journey headers, stats, the report, pcapng comments, the JSON's
`packet`/`flow` fields), and parsed back from it for `show --packet/--flow`.

The form is the whole id in hex: unique (a packet id is a per-CPU counter
under the CPU number, a flow id the conntrack entry's address / 8), short
enough to read, and what `stats` always printed for flows. JSON and CSV keep
the integer columns as well (`packet_id`, `flow_id`).
"""

from __future__ import annotations

import numpy as np


def format_id(value: int | None) -> str:
    """'20000000001'; '-' for none (0 means unknown)."""
    return format(int(value), "x") if value else "-"


def format_ids(values: np.ndarray) -> list[str]:
    """format_id of many ids, each distinct one formatted once."""
    values = np.asarray(values)
    if not len(values):
        return []
    unique, index = np.unique(values, return_inverse=True)
    texts = [format_id(v) for v in unique.tolist()]
    return [texts[i] for i in index.tolist()]


def parse_id(text: str) -> set[int]:
    """The ids a user may mean by ``text``: the printed hex form ('#' and
    '0x' allowed), and, for all-digit text, the decimal integer of the JSON
    and CSV columns as well. ValueError when it is neither."""
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
        raise ValueError(f"{text!r} is not a packet or flow id (the hex shown by trace/show, or the JSON's integer)")
    return candidates

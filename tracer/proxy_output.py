"""Journeys of docker-proxy legs, told in the output: a journey on either leg
of a relayed connection gets a `proxy` object in its JSON and, in the human
text, a line for the proxy hop, after the journey when the packet goes into
the proxy and before its hops when it comes out of it."""

from __future__ import annotations

import json
import re

import numpy as np

from tracer.journey_rows import JourneyRows
from tracer.proxies import ProxyLink, ProxyLinks

_COLOUR = re.compile(r"\x1b\[[0-9;]*m")
_HEADER = re.compile(r"(\S+ )?#")  # '#id ...', or after the wall-clock time ('03:38:15.856443 #id ...')
Note = tuple[int, ProxyLink, str, bool]  # journey index, link, leg, proxy hop after the hops


def journey_notes(jr: JourneyRows, links: ProxyLinks) -> list[Note]:
    """The journeys of `jr` that are on a known proxy leg. Looked up once
    per distinct (src, dst) of a first hop, not per journey: a connection's
    packets share them."""
    if not len(links) or not len(jr):
        return []
    first = jr.starts[:-1]
    s_codes, s_ports, _ = jr.src
    d_codes, d_ports, _ = jr.dst
    pairs = np.stack([np.asarray(c)[first].astype(np.int64) for c in (s_codes, s_ports, d_codes, d_ports)], axis=1)
    distinct, inverse = np.unique(pairs, axis=0, return_inverse=True)
    found: list[tuple[ProxyLink, str, bool] | None] = []
    for sc, sp, dc, dp in distinct.tolist():
        src, dst = (jr.src_ip[sc], sp), (jr.dst_ip[dc], dp)
        hit = links.find(src, dst) if src[0] is not None and dst[0] is not None else None
        if hit is None:
            found.append(None)
            continue
        link, leg = hit
        # Into the proxy: a request on the client leg, a reply on the backend leg.
        found.append((link, leg, src == link.client[0] if leg == "client" else dst == link.backend[0]))
    inverse = np.ravel(inverse)
    on_leg = np.array([f is not None for f in found])[inverse]
    return [(k, *found[inverse[k]]) for k in np.flatnonzero(on_leg).tolist()]


def annotate(block: bytes | memoryview, jr: JourneyRows, links: ProxyLinks, as_json: bool) -> bytes | memoryview:
    """The output block (JSON lines or text) with the proxy hop of every
    journey on a known proxy leg."""
    notes = journey_notes(jr, links)
    if not notes:
        return block
    return annotate_json(block, notes) if as_json else annotate_text(block, jr, notes)


def recorded_links(links: ProxyLinks, infos: list[dict]) -> None:
    """Links read back from a capture's `proxy` rows into ``links`` (a row
    that is not a link, in a damaged file, is left out)."""
    for info in infos:
        try:
            links.add_recorded(ProxyLink.from_record(info))
        except (KeyError, ValueError, TypeError):
            continue


def annotate_json(block: bytes | memoryview, notes: list[Note]) -> bytes:
    """JSON lines with `"proxy": {...}` added to the noted journeys' objects."""
    data = bytes(block)
    if not notes:
        return data
    lines = data.split(b"\n")
    for k, link, leg, _ in notes:
        line = lines[k]
        extra = json.dumps(link.to_json(leg), ensure_ascii=False).encode()
        lines[k] = line[:-1] + b', "proxy": ' + extra + b"}"
    return b"\n".join(lines)


def annotate_text(block: bytes | memoryview, jr: JourneyRows, notes: list[Note]) -> bytes:
    """Human text with the proxy hop's line in the noted journeys. A
    journey's text is its header line ('#' and the packet id, after any
    colour codes and the time) and then its hop lines, whatever their number."""
    data = bytes(block)
    if not notes:
        return data
    lines = data.decode().split("\n")
    header = [i for i, line in enumerate(lines) if _HEADER.match(_COLOUR.sub("", line))]
    if len(header) != len(jr):  # not the layout this expects: leave it be
        return data
    ends = header[1:] + [len(lines) - 1 if lines[-1] == "" else len(lines)]
    inserts = []
    for k, link, _leg, after in notes:
        inserts.append((ends[k] if after else header[k] + 1, f"{'':>12s}  proxy  {link.text()}"))
    for at, text in sorted(inserts, key=lambda x: x[0], reverse=True):
        lines.insert(at, text)
    return "\n".join(lines).encode()

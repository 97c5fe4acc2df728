"""Journeys of docker-proxy legs, told in the output: a journey on either leg
of a relayed connection gets a `proxy` object in its JSON and, in the human
text, a line for the proxy hop, after the journey when the packet goes into
the proxy and before its hops when it comes out of it."""

from __future__ import annotations

import json
import re

from tracer.journey_rows import JourneyRows
from tracer.proxies import ProxyLink, ProxyLinks

_COLOUR = re.compile(r"\x1b\[[0-9;]*m")
_HEADER = re.compile(r"(\S+ )?#")  # '#id ...', or after the wall-clock time ('03:38:15.856443 #id ...')
Note = tuple[int, ProxyLink, str, bool]  # journey index, link, leg, proxy hop after the hops


def journey_notes(jr: JourneyRows, links: ProxyLinks) -> list[Note]:
    """The journeys of `jr` that are on a known proxy leg."""
    if not len(links) or not len(jr):
        return []
    first = jr.starts[:-1]
    s_codes, s_ports, _ = jr.src
    d_codes, d_ports, _ = jr.dst
    notes = []
    for k, h in enumerate(first.tolist()):
        src = (jr.src_ip[s_codes[h]], int(s_ports[h]))
        dst = (jr.dst_ip[d_codes[h]], int(d_ports[h]))
        if src[0] is None or dst[0] is None:
            continue
        found = links.find(src, dst)
        if found is None:
            continue
        link, leg = found
        # Into the proxy: a request on the client leg, a reply on the backend leg.
        into = src == link.client[0] if leg == "client" else dst == link.backend[0]
        notes.append((k, link, leg, into))
    return notes


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

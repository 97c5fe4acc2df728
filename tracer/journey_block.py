"""The output of a chunk of whole packets' journeys, as `trace` prints it
live and `show` replays it: JSON lines or text, each hop's rules with
--rules, and the proxy hop of journeys on a docker-proxy leg."""

from __future__ import annotations

from typing import Any


def journey_block(rows: Any, as_json: bool, color: bool, rules: Any, links: Any,
                  into: Any = None) -> tuple[bytes | memoryview, int]:
    """(the block, how many journeys it holds) of ``rows`` (JourneyRows).
    ``rules``: a rule_render.RuleBook holding the hits of these packets
    (taken out of it here), None without --rules; ``links``: the ProxyLinks
    known so far (an empty chunk leaves them as they are); ``into``: a
    bytearray (JSON only) or the direct output's stage the text is written
    into (journey_json_text, render_rows): the block may then be a view of
    it, good until its next use."""
    from tracer.journey_json import journey_json_text
    from tracer.proxy_output import annotate
    from tracer.render_rows import render_rows

    ends = None  # JSON: where each line ends, for the proxy notes (no scan for newlines)
    if as_json:
        block, count, ends = journey_json_text(rows, into=into)
    else:
        block, count = render_rows(rows, color, into=into), len(rows)
    if rules is not None:
        from tracer.rule_render import hop_rules, with_rules_json, with_rules_text

        per_hop = hop_rules(rows, rules.pop(rows.packet_id.tolist()))
        if as_json:
            block = with_rules_json(block, rows, per_hop)
        else:
            block = with_rules_text(block, rows, per_hop, color, rules.profile)
        ends = None  # the rules' text moved the lines
    if count:  # linked or not: annotate also notes where connections start
        block = annotate(block, rows, links, as_json, ends)
    return block, count

"""`tracer explain`: trace the next connection with rules on and say, in
words, which way it went and which rules sent it there (tracer/explain.py)."""

from __future__ import annotations

import json
import time

import click

from tracer.cli.options import SECONDS, hooks_option, options_from, target_options
from tracer.errors import TracerError
from tracer.stopping import StopSignals
from tracer.text import printable

# After a first packet was delivered, how long to wait for its reply.
REPLY_WAIT_S = 5.0


class NoConnection(TracerError):
    exit_code = 1


@click.command()
@target_options
@hooks_option
@click.option("--timeout", type=SECONDS, default=60, show_default=True,
              help="Give up when no connection starts within S seconds.")
@click.option("--json", "as_json", is_flag=True, help="The two journeys (first packet, reply) with their rules, as JSON lines; "
              "each has hooks, the hook profile it was traced with.")
def explain(expression, ports, containers, hosts, proto, ifaces, tc_mode, sample, timeout, as_json, hooks):
    """Trace the next matching connection with its netfilter rules and
    explain its way through the host in words: where it arrived, which rule
    DNATed it to which container, which FORWARD rule accepted it, where it
    was delivered, how the reply was translated back; or which rule dropped it."""
    options = options_from(ports, containers, hosts, proto, ifaces, tc_mode, sample, expression, rules=True, hooks=hooks)
    request, reply, waited = watch_connection(options, timeout)
    if as_json:
        for j in (request, reply):
            if j is not None:
                # the profile: a lean journey lacks FORWARD by design, and says so itself
                click.echo(json.dumps({**j, "hooks": hooks}))
        return
    from tracer.explain import explain as words

    # Interface, container and chain names, rule comments: escaped for the terminal, line by line.
    click.echo("\n".join(map(printable, words(request, reply, waited, hooks).split("\n"))))


def watch_connection(options, timeout: float) -> tuple[dict, dict | None, float]:
    """The journeys (JSON dicts with rules per hop) of the first packet of
    the next connection and of its first reply."""
    from tracer.feeds import JourneyFeed
    from tracer.journey_json import journey_json_block
    from tracer.journey_rows import journey_rows
    from tracer.render import waiting_for_connection
    from tracer.rule_render import RuleBook, hop_rules, with_rules_json
    from tracer.session import TraceSession

    stop = StopSignals()
    session = TraceSession(options)
    request = reply = None
    try:
        session.start()
        # with the rule hits (options_from rules=True); every pass, the reply as soon as it is whole
        feed = JourneyFeed(session, showing=True, show_every=0)
        book = RuleBook()
        stop.running()
        info = session.run_info()
        click.echo(waiting_for_connection(info.describe, info.hooks, info.hooks_kept), err=True)
        started = time.monotonic()
        request_at = None
        while not stop.requested:
            batch = feed.take_pass()
            if batch.rules:
                book.add(batch.rules)
                book.forget_older()
            rows = journey_rows(batch.journeys) if batch.journeys is not None else None
            if rows is not None and len(rows):
                per_hop = hop_rules(rows, book.pop(rows.packet_id.tolist()))
                block = with_rules_json(journey_json_block(rows)[0], rows, per_hop)
                for j in map(json.loads, block.decode().splitlines()):
                    if request is None and _opens(j):
                        request, request_at = j, time.monotonic()
                    elif request is not None and reply is None and _replies(j, request):
                        reply = j
            now = time.monotonic()
            if request is not None and (reply is not None or request["verdict"] == "dropped"):
                break
            if request is not None and now - request_at >= REPLY_WAIT_S:
                break
            if request is None and now - started >= timeout:
                break
        waited = time.monotonic() - request_at if request_at else 0.0
        stop.finishing()
    finally:
        try:
            session.close()
        finally:
            stop.restore()
    if request is None:
        raise NoConnection(f"no connection ({session.describe() if session.filter else 'traced'}) "
                           f"started within {timeout:g} s")
    return request, reply, waited


def _opens(journey: dict) -> bool:
    """The first packet of a connection: a TCP SYN, or any UDP/ICMP packet
    in the original direction."""
    # Seen at its netfilter hooks past routing (a journey missing them would
    # explain nothing); --hooks lean has no FORWARD hop: POSTROUTING then.
    hooks = {h["hook"] for h in journey["hops"]}
    if journey.get("direction") == "reply" or not (hooks & {"nf_forward", "nf_input", "nf_output", "nf_postrouting"}
                                                   or "drop" in hooks):
        return False
    return journey.get("tcp_flags") == "S" if journey.get("protocol") == "tcp" else True


def _replies(journey: dict, request: dict) -> bool:
    return journey.get("direction") == "reply" and journey.get("flow_id") == request.get("flow_id") is not None

"""Journey rows from real journey records: the compiled passes `trace` runs
(native/journey_rows.c) and the numpy path they stand in for
(journey_records.journey_rows_numpy) on the same records the kernel wrote
for the lab's traffic: IPv4 through DNAT into the container and back,
IPv6 through docker-proxy (journeys on both of its legs, annotated with
the link), the drops a closing socket makes. Both must give the same rows and the same JSON lines, human
text, summary and proxy annotations, byte for byte."""

from __future__ import annotations

import subprocess
import time

from tests.e2e.tracing import burst_from, kernel_snapshot, own_source_ports, wait_gone
from tests.unit.test_native_rows import assert_same_outputs
from tracer import native, native_rows, record_words
from tracer.journey_records import journey_rows_numpy, journey_rows_of_records
from tracer.proxies import ProxyLinks
from tracer.journey_block import journey_block


def _get6(lab) -> subprocess.Popen:
    url = f"http://[{lab['host_address6']}]:{lab['port']}/"
    return subprocess.Popen(["ip", "netns", "exec", lab["netns"], "curl", "-s", "-g", "-m", "5", "-o", "/dev/null", url,
                             url, url], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def test_compiled_rows_equal_numpys_on_the_kernels_records(lab):
    from tracer.session import TraceOptions, TraceSession
    from tracer.targets import Targets

    assert native.native() is not None, f"tracer._native is not built: {native.why_not()}"
    before = kernel_snapshot()
    session = TraceSession(TraceOptions(Targets(ports=(lab["port"],)), proxy_links=True)).start()
    links = ProxyLinks()
    parts = []
    try:
        traffic = [burst_from(lab, own_source_ports(24), seconds=5)]
        if lab.get("host_address6"):
            traffic.append(_get6(lab))
        deadline = time.monotonic() + 30
        while any(p.poll() is None for p in traffic) and time.monotonic() < deadline:
            parts.append(session.read_records(0.05))
        for _ in range(12):  # the last journeys: ended, or swept out when they go quiet
            parts.append(session.read_records(0.05))
            for link in session.read_proxy_links():
                links.add_recorded(link)
        ctx = session.ctx
        records = record_words.concat([p for p in parts if len(p)])
    finally:
        session.close()
        wait_gone(before)
    assert len(records) >= 100, f"only {len(records)} journey records from the lab's traffic"
    assert native_rows.usable(records), "the drain hands out the kernel's own dtype"
    # as `trace` takes them: batches of what the hold lets go, and all at once
    for batch in [records[i:i + 64] for i in range(0, len(records), 64)] + [records]:
        compiled = journey_rows_of_records(batch, ctx)
        reference = journey_rows_numpy(batch, ctx)
        assert compiled.pair is None, "the compiled path made these rows"
        assert_same_outputs(compiled, reference)
        for as_json in (True, False):
            a = journey_block(compiled, as_json, False, None, links)[0]
            b = journey_block(reference, as_json, False, None, links)[0]
            assert bytes(a) == bytes(b)
    whole = journey_rows_of_records(records, ctx)
    verdicts = set(whole.verdict.tolist())
    assert 0 in verdicts, "delivered packets among them"
    if lab.get("host_address6"):
        assert any(v and ":" in v for v in whole.src_ip), "IPv6 journeys among them"
        if lab.get("userland_proxy"):
            block = bytes(journey_block(whole, True, False, None, links)[0])
            assert b'"proxy": {' in block, "journeys on docker-proxy's legs among them"

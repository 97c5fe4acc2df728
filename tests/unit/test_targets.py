"""tracer/targets.py: the one record of what to trace (or show), checked
once; the kernel gets plain values from it. `show`'s matching is pinned on
a recorded capture in test_pinned_output.py."""

from __future__ import annotations

import pytest

from tracer.errors import TracerError
from tracer.targets import Targets


def test_built_once_from_the_cli_words():
    t = Targets.from_cli(ports=(8000, 9000), containers=("web",), hosts=("198.18.0.2",), proto="TCP", sample=4,
                         expression=("tcp", "port", "8000"))
    assert (t.ports, t.containers, t.hosts, t.proto, t.sample, t.expression) == (
        (8000, 9000), ("web",), ("198.18.0.2",), "tcp", 4, "tcp port 8000")
    assert "pcap_filter_run" in t.expression_c
    with pytest.raises(AttributeError):
        t.ports = ()  # frozen: nothing changes it after the check


def test_describe_names_resolved_containers_else_those_asked_for():
    t = Targets(ports=(8000,), containers=("web",), proto="udp", sample=3, expression="udp")
    assert t.describe() == "'udp' and port 8000 and container web and proto udp, 1 in 3 flows"
    assert t.describe(["web-1", "web-2"]) == "'udp' and port 8000 and container web-1 and container web-2 and proto udp, 1 in 3 flows"
    assert Targets().describe() == "all IPv4 and IPv6 traffic"


@pytest.mark.parametrize("live", [True, False])
def test_a_bad_expression_fails_when_built(live):
    with pytest.raises(TracerError, match="filter expression|syntax"):
        Targets.from_cli(expression=("tcp", "prot", "80"), live=live)


def test_bad_values_fail_when_built():
    for kw, words in (({"ports": (0,)}, "out of range"), ({"proto": "sctp"}, "unknown protocol"),
                      ({"hosts": ("1.2.3",)}, "not an IPv4 or IPv6 address"), ({"sample": 0}, "--sample")):
        with pytest.raises(TracerError, match=words):
            Targets(**kw)


def test_the_kernel_gets_plain_values():
    f = Targets(ports=(8000,), hosts=("fd00::1",), containers=("web",), proto="tcp", expression="tcp").kernel_filter(
        follow_proxies=True)
    assert (f.ports, f.hosts, f.proto, f.containers, f.follow_proxies) == ((8000,), ("fd00::1",), "tcp", True, True)
    assert set(f.parts()) == {"port", "hosts", "containers", "proxy_backends", "proto"}
    flags = f.cflags()
    assert "-DPCAP_FILTER" in flags and f"-DFILTER_ON={f.values()['on']}ULL" in flags
    plain = Targets().kernel_filter()
    assert plain.parts() == () and "-DFILTER_ON=0ULL" in plain.cflags() and "PCAP_FILTER" not in " ".join(plain.cflags())

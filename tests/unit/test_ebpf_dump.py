"""--ebpf (trace, record, latency, explain): the BPF C the options build,
after the clang flags, printed instead of tracing, as bcc's tools do. BTF
offsets are stubbed; tests/e2e/test_ebpf_dump.py compiles a real dump."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from tracer.cli import cli
from tracer.kernel import program as P


@pytest.fixture(autouse=True)
def no_btf(monkeypatch):
    monkeypatch.setattr(P, "resolve_offsets", lambda wanted: {macro: 0 for macro in wanted})


def dump(*args: str):
    return CliRunner().invoke(cli, [*args, "--ebpf"], catch_exceptions=False)


def flags_of(text: str) -> list[str]:
    head = text[:text.index(" */\n")]
    return [line.strip(" *") for line in head.splitlines()[1:]]


def test_trace_prints_the_program_its_options_build():
    out = dump("trace", "--port", "8000", "tcp[tcpflags] & tcp-syn != 0")
    assert out.exit_code == 0, out.output
    flags = flags_of(out.output)
    assert "-DFILTER_PORT=16415" in flags and "-DPCAP_FILTER" in flags and "-DLATENCY_MODE" not in flags
    assert "struct event {" in out.output and "int pcap_filter_run(const u8 *P" in out.output
    for sensor in ("tc", "netfilter", "drop"):
        assert f"/* ---- sensor: {sensor} ---- */" in out.output
    assert "tracer: tracing" not in out.output + (out.stderr if out.stderr_bytes is not None else "")  # not a trace


def test_each_command_its_own_program():
    latency = dump("latency", "--proto", "udp")
    record = dump("record", "-w", "never-written.arrows", "--host", "198.18.0.2")
    assert latency.exit_code == record.exit_code == 0, (latency.output, record.output)
    assert "-DLATENCY_MODE" in flags_of(latency.output) and "-DFILTER_PROTO=17" in flags_of(latency.output)
    assert "-DFILTER_ON=8ULL" in flags_of(record.output) and "-DLATENCY_MODE" not in flags_of(record.output)
    assert dump("trace").output != dump("trace", "--sample", "4").output


def test_a_bad_expression_is_still_one_line():
    out = CliRunner().invoke(cli, ["trace", "--ebpf", "tcp prot 80"])
    assert out.exit_code != 0 and "syntax error" in out.output and "struct event" not in out.output


def test_the_dump_has_the_sensors_the_options_attach(monkeypatch):
    """docker-proxy found: trace and record (--proxy-links by default) add the
    proxy sensor, --no-proxy-links and latency do not."""
    from types import SimpleNamespace

    from tracer import docker_proxies

    proxy = SimpleNamespace(pid=4242, host_port=8000, container_ip="172.17.0.2", container_port=8080)
    monkeypatch.setattr(docker_proxies, "find_proxies", lambda: [proxy])
    monkeypatch.setattr(docker_proxies, "proxies_by_pid", lambda found: {p.pid: p for p in found})
    marker = "/* ---- sensor: proxy ---- */"
    assert marker in dump("trace", "--port", "8000").output
    assert marker in dump("record", "-w", "x.arrows", "--port", "8000").output
    assert marker not in dump("record", "-w", "x.arrows", "--port", "8000", "--no-proxy-links").output
    assert marker not in dump("latency", "--port", "8000").output

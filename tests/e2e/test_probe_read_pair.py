"""PROBE_READ_PAIR (bpf/common.h): two fields of a kernel struct in one
bpf_probe_read_kernel where they are close (skb head/network_header and
net_device ifindex/nd_net on this kernel), two where they are not (another
kernel's layout, offsets set here). Each layout compiles and the drop
program passes the verifier (loaded, never attached); its probe reads are
counted in the loaded instructions."""

from __future__ import annotations

import struct

import pytest

from tracer.kernel.program import resolve_offsets

BPF_PROG_TYPE_RAW_TRACEPOINT = 17
BPF_FUNC_PROBE_READ_KERNEL = 113
CALL = 0x85  # BPF_JMP | BPF_CALL


def _probe_reads(monkeypatch, offsets: dict) -> int:
    from bcc import BPF

    from tracer.kernel import program as P
    from tracer.kernel.headers import ensure_bcc_headers
    from tracer.sensors.drops import DropSensor

    monkeypatch.setattr(P, "resolve_offsets", lambda wanted: {**resolve_offsets(wanted), **offsets})
    program = P.Program([DropSensor()], P.Filter(ports=(8000,)), ringbuf_pages=16)
    ensure_bcc_headers()
    bpf = BPF(text=program.source().encode(), cflags=program.cflags())
    try:
        assert bpf.load_func(b"trc_drop", BPF_PROG_TYPE_RAW_TRACEPOINT).fd >= 0
        code = bpf.dump_func(b"trc_drop")
    finally:
        bpf.cleanup()
    insns = [struct.unpack_from("<BBhi", code, i) for i in range(0, len(code), 8)]
    return sum(1 for op, _regs, _off, imm in insns if op == CALL and imm == BPF_FUNC_PROBE_READ_KERNEL)


@pytest.fixture(scope="module")
def real_offsets():
    wanted = {"OFF_SKB_HEAD": ("sk_buff", "head", 8), "OFF_SKB_NETWORK_HEADER": ("sk_buff", "network_header", 2),
              "OFF_DEV_IFINDEX": ("net_device", "ifindex", 4), "OFF_DEV_ND_NET": ("net_device", "nd_net.net", 8)}
    return resolve_offsets(wanted)


def test_close_fields_are_one_read_far_ones_two(monkeypatch, real_offsets):
    o = real_offsets
    if not (0 < o["OFF_SKB_HEAD"] - o["OFF_SKB_NETWORK_HEADER"] <= 56 and 0 < o["OFF_DEV_ND_NET"] - o["OFF_DEV_IFINDEX"] <= 56):
        pytest.skip(f"this kernel's layout has the pairs apart ({o}): the one-read case is not this kernel's")
    here = _probe_reads(monkeypatch, {})
    far = _probe_reads(monkeypatch, {"OFF_SKB_HEAD": o["OFF_SKB_NETWORK_HEADER"] + 400,
                                     "OFF_DEV_ND_NET": o["OFF_DEV_IFINDEX"] + 400})
    reversed_skb = _probe_reads(monkeypatch, {"OFF_SKB_HEAD": o["OFF_SKB_NETWORK_HEADER"] - 16})
    assert far == here + 2 and reversed_skb == here + 1, (here, far, reversed_skb)

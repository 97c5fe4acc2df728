"""`trace --ebpf` prints the program tracing would build: that text, with
the flags it lists, compiles with BCC and its tc program passes the
verifier (loaded here, never attached)."""

from __future__ import annotations

import subprocess
import sys

from tests.e2e.tracing import REPO


def test_the_dump_is_a_program_the_kernel_accepts():
    out = subprocess.run([sys.executable, "-m", "tracer", "trace", "--ebpf", "--port", "8000", "tcp"], cwd=REPO,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    head = out.stdout[:out.stdout.index(" */\n")]
    flags = [line.strip(" *") for line in head.splitlines()[1:]]
    assert "-DFILTER_PORT=16415" in flags and "-DPCAP_FILTER" in flags

    from bcc import BPF

    from tracer.kernel.bpf_syscall import BPF_PROG_TYPE_SCHED_CLS
    from tracer.kernel.headers import ensure_bcc_headers

    ensure_bcc_headers()
    bpf = BPF(text=out.stdout.encode(), cflags=flags)
    try:
        assert bpf.load_func(b"trc_tc_eg", BPF_PROG_TYPE_SCHED_CLS).fd >= 0
    finally:
        bpf.cleanup()

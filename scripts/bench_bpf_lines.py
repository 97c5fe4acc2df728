"""Where the live BPF time goes, by source line (issue 9, item 4).

``bench_bpf.py --live`` says how long each program runs; the cuts of
``bench_bpf_breakdown.py`` say what a step costs by building the program
without it. This says where the CPU is while the programs run, the way
``perf annotate`` would if it could read BPF here (perf 6.1 is built
without libbfd): the tracer (``--mode``, as users run it, ``--port 8000``)
is started with TRACER_DEBUG=1, so BCC gives its programs BTF line info,
and the kernel says at which address of the JITed code each source line
starts (``jited_line_info``); ``perf record -a -g`` samples every CPU while
``ab -c 8`` drives the lab's HTTP; each sample inside one of the tracer's
programs is put on the source line its address falls in, and each sample
in a kernel function a program called (a map lookup, the clock, the ring
buffer) on that program and function.

Read the lines as where the CPU waits, not what an instruction costs: a
sample is taken at the oldest instruction not yet retired, so a load that
misses the caches shows up on the line of the next one, and a locked
instruction carries the stores before it. ``docs/benchmarks.md``, session
27, is the first reading (a packet's cold packet-cache set, 38-53 % of the
claiming tc programs' own samples, which ``pcache_touch`` then overlapped
with the flows lookup).

TRACER_DEBUG builds differ a little from the shipped ones (the filter's
values as constants instead of values written in at load).

Run as root from the repo, the lab up (``tracer lab up``), ``perf`` on
PATH: ``.venv/bin/python scripts/bench_bpf_lines.py [--mode record]
[--seconds 10] [--top 40] [--program trc_tc_in]`` (``--quick``: a smoke
run).
"""

from __future__ import annotations

import argparse
import bisect
import ctypes
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import threading
from collections import Counter
from pathlib import Path
from typing import NamedTuple

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "scripts"))

from tracer.kernel import bpf_syscall as sc  # noqa: E402

BPF_PROG_GET_FD_BY_ID = 13
BPF_BTF_GET_FD_BY_ID = 19
PROG_INFO_SIZE = 232  # struct bpf_prog_info up to attach_btf_id (6.x)
BTF_INFO_SIZE = 32  # struct bpf_btf_info


class Line(NamedTuple):
    """Where one source line's code starts in a JITed program."""
    address: int
    number: int
    text: str


class Program(NamedTuple):
    name: str
    start: int
    length: int
    lines: tuple[Line, ...]  # by address
    addresses: tuple[int, ...]  # the lines' own, for the search

    def line_at(self, address: int) -> Line | None:
        if not self.start <= address < self.start + self.length or not self.lines:
            return None
        return self.lines[max(bisect.bisect_right(self.addresses, address) - 1, 0)]


def btf_strings(raw: bytes) -> bytes:
    """The string section of a raw BTF blob (header: magic, version, flags,
    hdr_len, type_off, type_len, str_off, str_len)."""
    magic, _, _, hdr_len, _, _, str_off, str_len = struct.unpack_from("=HBBIIIII", raw, 0)
    if magic != 0xEB9F:
        raise ValueError(f"not BTF (magic {magic:#x})")
    start = hdr_len + str_off
    return raw[start:start + str_len]


def string_at(strings: bytes, offset: int) -> str:
    end = strings.find(b"\0", offset)
    return strings[offset:end if end >= 0 else len(strings)].decode(errors="replace")


def program_lines(name: str, jited: list[int], records: list[tuple[int, int, int, int]], strings: bytes,
                  length: int) -> Program:
    """A program from its jited_line_info (an address per line_info record)
    and line_info records (insn_off, file_name_off, line_off, line_col)."""
    lines = tuple(sorted((Line(a, col >> 10, string_at(strings, line_off).strip())
                          for a, (_, _, line_off, col) in zip(jited, records)), key=lambda ln: ln.address))
    return Program(name, min(jited) if jited else 0, length, lines, tuple(ln.address for ln in lines))


def _info(fd: int, size: int, fill: dict[int, tuple[str, object]]) -> bytes:
    """sc.info_by_fd with some fields set first (offset -> (format, value)):
    the arrays the kernel is to copy out, and their lengths."""
    buf = ctypes.create_string_buffer(size)
    for off, (fmt, value) in fill.items():
        struct.pack_into(fmt, buf, off, value)
    sc.bpf(sc.BPF_OBJ_GET_INFO_BY_FD, sc._pad(struct.pack("=IIQ", fd, size, ctypes.addressof(buf))))
    return buf.raw


def load_program(prog_id: int) -> Program | None:
    """The line map of a loaded program, or None if it has no line info
    (built without -g: not a TRACER_DEBUG build)."""
    fd = sc.bpf(BPF_PROG_GET_FD_BY_ID, sc._pad(struct.pack("=III", prog_id, 0, 0)))
    try:
        raw = sc.info_by_fd(fd, PROG_INFO_SIZE)
        name = raw[64:80].split(b"\0", 1)[0].decode()
        jited_len, = struct.unpack_from("=I", raw, 16)
        btf_id, = struct.unpack_from("=I", raw, 128)
        n_lines, = struct.unpack_from("=I", raw, 148)
        n_jited, = struct.unpack_from("=I", raw, 168)
        rec_size, = struct.unpack_from("=I", raw, 172)
        if not n_lines or not n_jited or not btf_id:
            return None
        lines = ctypes.create_string_buffer(n_lines * rec_size)
        jited = ctypes.create_string_buffer(n_jited * 8)
        raw = _info(fd, PROG_INFO_SIZE, {148: ("=I", n_lines), 152: ("=Q", ctypes.addressof(lines)),
                                         160: ("=Q", ctypes.addressof(jited)), 168: ("=I", n_jited),
                                         172: ("=I", rec_size), 176: ("=I", 8)})
    finally:
        os.close(fd)
    records = [struct.unpack_from("=IIII", lines.raw, i * rec_size) for i in range(n_lines)]
    addresses = [struct.unpack_from("=Q", jited.raw, i * 8)[0] for i in range(n_jited)]
    btf_fd = sc.bpf(BPF_BTF_GET_FD_BY_ID, sc._pad(struct.pack("=I", btf_id)))
    try:
        size, = struct.unpack_from("=I", sc.info_by_fd(btf_fd, BTF_INFO_SIZE), 8)
        blob = ctypes.create_string_buffer(size)
        _info(btf_fd, BTF_INFO_SIZE, {0: ("=Q", ctypes.addressof(blob)), 8: ("=I", size)})
    finally:
        os.close(btf_fd)
    return program_lines(name, addresses, records, btf_strings(blob.raw), jited_len)


def parse_perf_script(text: str) -> list[list[tuple[int, str]]]:
    """`perf script -F ip,sym` with call chains: each sample's frames
    (address, symbol), leaf first."""
    samples = []
    for block in text.split("\n\n"):
        frames = []
        for row in block.strip().splitlines():
            parts = row.split(None, 1)
            try:
                frames.append((int(parts[0], 16), parts[1] if len(parts) > 1 else "?"))
            except (ValueError, IndexError):
                continue
        if frames:
            samples.append(frames)
    return samples


def attribute(samples: list[list[tuple[int, str]]], programs: list[Program]) -> tuple[Counter, Counter, int]:
    """(samples per (program, line number, text) of the programs' own code,
    samples per (program, function) of what they called, all samples)."""
    own, called = Counter(), Counter()
    for frames in samples:
        for depth, (address, _) in enumerate(frames):
            hit = next(((p, ln) for p in programs if (ln := p.line_at(address)) is not None), None)
            if hit is None:
                continue
            prog, line = hit
            if depth == 0:
                own[(prog.name, line.number, line.text)] += 1
            else:
                called[(prog.name, frames[0][1])] += 1
            break
    return own, called, len(samples)


def report(own: Counter, called: Counter, total: int, top: int, program: str | None) -> None:
    per_prog = Counter()
    for (name, _, _), n in own.items():
        per_prog[name] += n
    calls = Counter()
    for (name, _), n in called.items():
        calls[name] += n
    in_bpf = sum(per_prog.values()) + sum(calls.values())
    print(f"  {in_bpf:,} of {total:,} samples in the tracer's programs ({100 * in_bpf / max(total, 1):.1f} %)")
    print(f"  {'program':14s} {'samples':>8s} {'own':>6s} {'called':>7s}")
    for name in sorted(set(per_prog) | set(calls), key=lambda n: -(per_prog[n] + calls[n])):
        print(f"  {name:14s} {per_prog[name] + calls[name]:8,d} {per_prog[name]:6,d} {calls[name]:7,d}")
    lines = Counter({k: v for k, v in own.items() if program in (None, k[0])})
    funcs = Counter({k: v for k, v in called.items() if program in (None, k[0])})
    base = sum(lines.values()) + sum(funcs.values())
    print(f"\n  own code by source line{' of ' + program if program else ''} "
          f"(share of {'its' if program else 'all BPF'} samples, cumulative; line numbers of the compiled text)")
    merged = Counter()  # a line inlined into several programs: one row
    for (_, number, text), n in lines.items():
        merged[(number, text)] += n
    cum = 0
    for (number, text), n in merged.most_common(top):
        cum += n
        print(f"  {n:6,d} {100 * n / base:5.1f} % {100 * cum / base:5.1f} %  line {number:<5d} {text[:96]}")
    print(f"\n  functions the programs called{' (' + program + ')' if program else ''}")
    by_func = Counter()
    for (_, func), n in funcs.items():
        by_func[func] += n
    for func, n in by_func.most_common(top // 2):
        print(f"  {n:6,d} {100 * n / base:5.1f} %  {func}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--mode", choices=("record", "trace", "latency"), default="record")
    ap.add_argument("--seconds", type=float, default=10.0, help="perf's sampling time (ab runs through it)")
    ap.add_argument("--top", type=int, default=40, help="source lines shown")
    ap.add_argument("--program", help="one program's lines (e.g. trc_tc_in)")
    ap.add_argument("--quick", action="store_true", help="a smoke run: 2 s of samples, 10 lines")
    args = ap.parse_args()
    if args.quick:
        args.seconds, args.top = 2.0, 10
    if os.geteuid() != 0:
        raise SystemExit("bench_bpf_lines: run as root")
    if not shutil.which("perf"):
        raise SystemExit("bench_bpf_lines: needs perf (linux-perf on Debian, linux-tools on Ubuntu)")
    import bench_overhead as bo
    from bench_bpf_stats import _prog_ids

    status = bo.lab_status()
    os.environ["TRACER_DEBUG"] = "1"  # -g: BTF line info in the programs (tracer/kernel/program.py)
    tracer = bo.Tracer((8000,), args.mode, ready_timeout=120)
    ab_done = threading.Event()
    perf_data = tempfile.NamedTemporaryFile(prefix="bench-bpf-lines-", suffix=".data", delete=False).name
    try:
        programs = [p for pid in sorted(_prog_ids(tracer.proc.pid)) if (p := load_program(pid)) is not None]
        programs = [p for p in programs if p.name.startswith("trc_")]
        if not programs:
            raise SystemExit("bench_bpf_lines: the tracer's programs have no line info (not built with -g)")

        def drive() -> None:  # ab until perf is done
            while not ab_done.is_set():
                try:
                    bo.run_ab(status, 20000, 8)
                except RuntimeError:
                    return

        workload = threading.Thread(target=drive, daemon=True)
        workload.start()
        subprocess.run(["perf", "record", "-a", "-g", "-e", "cpu-clock", "-F", "10000", "-o", perf_data, "--",
                        "sleep", str(args.seconds)], check=True, capture_output=True)
        ab_done.set()
        text = subprocess.run(["perf", "script", "-i", perf_data, "-F", "ip,sym"], capture_output=True, text=True,
                              check=True).stdout
    finally:
        ab_done.set()
        tracer.stop()
        if os.path.exists(perf_data):
            os.unlink(perf_data)
    own, called, total = attribute(parse_perf_script(text), programs)
    print(f"bench_bpf_lines: `tracer {args.mode} --port 8000` (TRACER_DEBUG=1 build) under ab -c 8, "
          f"perf -a -g at 10 kHz for {args.seconds:g} s")
    report(own, called, total, args.top, args.program)
    return 0


if __name__ == "__main__":
    sys.exit(main())

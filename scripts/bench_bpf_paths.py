#!/usr/bin/env python3
"""Which path each BPF run takes, counted (issue 9, item 4).

``bench_bpf_breakdown.py`` says what each step costs; this script says how
often each path runs, so a cost per run can be told from a mix of runs. It
builds a copy of this tree's programs (trace mode) with per-CPU counters
added at the sensors' branch points, runs that copy's ``tracer trace --json
--port 8000 --no-proxy-links`` under ``ab -n N -c 8`` to the lab's :8000,
reads the counters (``bpftool map dump``) before and after, and prints per
HTTP request:

* tc: runs that parsed a packet, runs that found a last sighting of their
  skb (``tc_known``), runs the fast path took (``tc_fast``), and the full
  paths of traced packets by hook and side (host or container netns: the
  claims and the hooks the fast path missed);
* netfilter: runs with a conntrack entry, runs that found a last sighting
  (``nf_known``; from tc's), a new connection's runs (IP_CT_NEW), runs the
  fast path took (``nf_append``), and the full paths of traced packets by
  hook and NAT stage.

Counts, not times: the counters add a few instructions per run, so the
build is not the one to time (``bench_bpf.py --live`` is). Other engineers'
traffic on :8000 adds runs: run it when the port is quiet, or read the
figures as upper bounds. The counters are text substitutions on the
sources (as bench_bpf_breakdown.py's cuts); a source that no longer has
the text they expect stops the script (update the anchors below).
Run as root with the lab up: ``.venv/bin/python scripts/bench_bpf_paths.py``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "scripts"))

from bench_figures import load_average  # noqa: E402

N_COUNTERS = 64
# Counter slots: fixed ones, then full paths per hook (HOOK_* < 8) x side/stage.
TC_RUNS, TC_KNOWN, TC_FAST = 0, 1, 2
NF_RUNS, NF_KNOWN, NF_FROM_TC, NF_NEW, NF_FAST = 4, 5, 6, 7, 8
NF_FULL, TC_FULL = 16, 32  # + hook * 2 + (after stage | container netns)
HOOK_NAMES = ("-", "tc_ingress", "tc_egress", "prerouting", "input", "forward", "output", "postrouting")

COUNTER = ("BPF_PERCPU_ARRAY(trc_paths, u64, %d);\n"
           "static __always_inline void path_count(u32 i) { u64 *c = trc_paths.lookup(&i); if (c) *c += 1; }\n"
           % N_COUNTERS)
# (file, text expected once, the same with the counters in)
EDITS: tuple[tuple[str, str, str], ...] = (
    ("common.h", "BPF_PERCPU_ARRAY(id_seq, u64, 1);\n", "BPF_PERCPU_ARRAY(id_seq, u64, 1);\n" + COUNTER),
    ("tc.c", "    if (from && tc_fast(from, last, &p, hook, flags & FLAG_IN_CONTAINER_NS, ctx->ifindex, skb))\n"
             "        return TC_CONTINUE;\n",
     f"    path_count({TC_RUNS});\n    if (from)\n        path_count({TC_KNOWN});\n"
     "    if (from && tc_fast(from, last, &p, hook, flags & FLAG_IN_CONTAINER_NS, ctx->ifindex, skb)) {\n"
     f"        path_count({TC_FAST});\n        return TC_CONTINUE;\n    }}\n"),
    ("tc.c", "    u64 now = bpf_ktime_get_ns();\n#ifdef LATENCY_MODE\n",
     f"    path_count({TC_FULL} + (hook & 7) * 2 + ((flags & FLAG_IN_CONTAINER_NS) ? 1 : 0));\n"
     "    u64 now = bpf_ktime_get_ns();\n#ifdef LATENCY_MODE\n"),
    ("netfilter.c", "        if (from && nf_append(from, last, skb, state, hook, stage, nfct))\n            return 1;\n",
     f"        path_count({NF_RUNS});\n        if (from)\n            path_count({NF_KNOWN});\n"
     f"        if (from && from != last)\n            path_count({NF_FROM_TC});\n"
     f"        if ((nfct & NFCT_INFOMASK) == IP_CT_NEW)\n            path_count({NF_NEW});\n"
     "        if (from && nf_append(from, last, skb, state, hook, stage, nfct)) {\n"
     f"            path_count({NF_FAST});\n            return 1;\n        }}\n"),
    ("netfilter.c", "        if (!ct_traced(ct, skb) || !parse_nf_skb(&p, skb))\n            return 1;\n",
     "        if (!ct_traced(ct, skb) || !parse_nf_skb(&p, skb))\n            return 1;\n"
     f"        path_count({NF_FULL} + (hook & 7) * 2 + (stage == NAT_AFTER ? 1 : 0));\n"),
)


def build(where: Path) -> Path:
    """A copy of this tree whose bpf/ counts its paths."""
    tree = where / "paths"
    for part in ("bpf", "tracer"):
        shutil.copytree(REPO / part, tree / part, ignore=shutil.ignore_patterns("__pycache__"))
    for name, old, new in EDITS:
        path = tree / "bpf" / name
        text = path.read_text()
        if text.count(old) != 1:
            raise SystemExit(f"bench_bpf_paths: bpf/{name} changed; expected once:\n{old}")
        path.write_text(text.replace(old, new))
    return tree


def _int(value) -> int:
    """A bpftool -j number: an int, or hex bytes (little-endian) without BTF."""
    return value if isinstance(value, int) else int.from_bytes(bytes(int(x, 16) for x in value), "little")


def read_counters(pid: int) -> list[int]:
    """The trc_paths counters of process `pid`'s maps, summed over CPUs."""
    mine = set()
    for fd in Path(f"/proc/{pid}/fdinfo").iterdir():
        try:
            mine.update(int(line.split()[1]) for line in fd.read_text().splitlines() if line.startswith("map_id:"))
        except OSError:
            continue
    maps = json.loads(subprocess.run(["bpftool", "-j", "map", "show"], capture_output=True, text=True,
                                     check=True).stdout)
    ids = [m["id"] for m in maps if m.get("name") == "trc_paths" and m["id"] in mine]
    if not ids:
        raise SystemExit("bench_bpf_paths: the tracer holds no trc_paths map (did the build change?)")
    dump = json.loads(subprocess.run(["bpftool", "-j", "map", "dump", "id", str(ids[0])], capture_output=True,
                                     text=True, check=True).stdout)
    out = [0] * N_COUNTERS
    for entry in dump:
        out[_int(entry["key"])] = sum(_int(v["value"]) for v in entry["values"])
    return out


def full_paths(d: list[float], base: int, labels: tuple[str, str]) -> None:
    """The full-path counts per hook, two to a hook (side or NAT stage)."""
    for hook in range(8):
        for i, label in enumerate(labels):
            n = d[base + hook * 2 + i]
            if n:
                print(f"    full path  {HOOK_NAMES[hook]:12s} {label:16s} {n:6.2f}")


def report(d: list[float]) -> None:
    print(f"  tc        runs {d[TC_RUNS]:6.1f}   found a last sighting {d[TC_KNOWN]:6.1f}   "
          f"fast path {d[TC_FAST]:6.1f}")
    full_paths(d, TC_FULL, ("host", "container netns"))
    print(f"  netfilter runs {d[NF_RUNS]:6.1f}   found a last sighting {d[NF_KNOWN]:6.1f} "
          f"(from tc {d[NF_FROM_TC]:.1f})   new connection {d[NF_NEW]:5.1f}   fast path {d[NF_FAST]:6.1f}")
    full_paths(d, NF_FULL, ("before/none", "after"))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--requests", type=int, default=3000, help="ab -n (default 3000)")
    args = ap.parse_args()
    import bench_bpf as bb
    import bench_overhead as bo

    status = bo.lab_status()
    with tempfile.TemporaryDirectory(prefix="bench-bpf-paths-") as tmp:
        tracer = bb.TreeTracer(build(Path(tmp)))
        try:
            before = read_counters(tracer.proc.pid)
            rate = bo.run_ab(status, args.requests, 8)
            time.sleep(0.3)
            after = read_counters(tracer.proc.pid)
        finally:
            tracer.stop()
    print(f"bench_bpf_paths: `trace --port 8000 --no-proxy-links` (trace mode, counting build) under ab -n "
          f"{args.requests} -c 8 to :8000, {rate:.0f} req/s; load {load_average()}; runs per HTTP request "
          "(other traffic on :8000 adds to them):")
    report([(a - b) / args.requests for a, b in zip(after, before)])
    return 0


if __name__ == "__main__":
    sys.exit(main())

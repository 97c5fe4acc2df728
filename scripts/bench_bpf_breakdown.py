#!/usr/bin/env python3
"""Where the live BPF time per sighting goes, step by step (issue 9, item 4).

``bench_bpf.py --live`` gives ns per run of each program; this script
splits it. It builds copies of this tree's programs that stop early at one
step (a cut), runs each copy's ``tracer trace --json --port 8000
--no-proxy-links`` under ``ab -n N -c 8`` to the lab's :8000 with
``kernel.bpf_stats_enabled`` (the variants alternating, round after round,
the order reversed every other round) and prints every program's median ns
per run per variant. The difference between two neighbouring cuts is what
that step costs live, cache misses and all.

Variants (each a copy of bpf/ with the cut compiled in):

* ``noop``: every program returns at once (dispatch + the statistics' own
  clock reads: the floor);
* netfilter's entry (what every netfilter run pays before its fast path's
  clock): ``n0`` returns after reading the hook and the conntrack word,
  ``n1`` after the per-CPU last-sighting lookup, ``n2`` after deciding
  whose last sighting the packet follows (nf_known; returns where it
  found one). Netfilter only: tc runs as built;
* fast path (a later hook of a packet already followed; tc_fast and
  nf_append): ``f0`` returns before its clock read, ``f1`` after it,
  ``f2`` after finding the journey and confirming the packet (tc: the
  fingerprint; netfilter: the header read), ``f3`` before appending the hop
  (tc: also the interface role and the tuple; netfilter: also the devices).
  Cut fast paths append nothing, so journeys end quiet, by the sweep;
* first sightings on tc (the claim, tc_sense's full path): ``c0`` returns
  after the fingerprint, the packet-cache set's early load, the flows
  lookup and the filter, ``c1`` after the clock read, ``c2`` after the packet-cache set is found and searched
  (its line read: before session 16 the compiler dropped the search, whose
  result the cut did not use, and c2 read ~190 ns a claim too cheap).
  No journey is claimed, so every tc run of these is a full path:
  trc_tc_eg_ct (the reply's claim at the container's egress) reads as the
  claim's cost to that step;
* ``noemit``: everything but the ring-buffer copy of the finished journey
  (tracer prints nothing; the programs' statistics stand);
* ``full``: this tree as it is.

The cuts are text substitutions on the sources; a source that no longer
has the text they expect stops the script (update the anchors below).
Run as root with the lab up: ``.venv/bin/python scripts/bench_bpf_breakdown.py``.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "scripts"))

from bench_figures import load_average  # noqa: E402

# Each cut: (source file, text it expects, the same text with the cut in).
# The early returns use what the step computed, so the compiler keeps it.
CLOCK = "    u64 now = bpf_ktime_get_ns();\n"
CUTS: tuple[tuple[str, str, str], ...] = (
    ("tc.c", CLOCK + "    struct pkt_slot *slot;\n",
     "#if CUT == 0\n    return 1;\n#endif\n" + CLOCK + "#if CUT == 1\n    return now != 1;\n#endif\n"
     "    struct pkt_slot *slot;\n"),
    ("tc.c", "    struct sighting s = {};\n    s.ifindex = ifindex;\n",
     "#if CUT == 2\n    return 1;\n#endif\n    struct sighting s = {};\n    s.ifindex = ifindex;\n"),
    ("tc.c", "    adopt_last(last, from, skb);\n    return journey_fast_hop(last, slot, j, &s, now, p->ttl, p, p->ip_id, p->tot_len, SENSOR_TC);",
     "#if CUT == 3\n    return journey_tuple(j, p) != 77 && s.terminal != 5;\n#endif\n"
     "    adopt_last(last, from, skb);\n    return journey_fast_hop(last, slot, j, &s, now, p->ttl, p, p->ip_id, p->tot_len, SENSOR_TC);"),
    ("tc.c", CLOCK + "#ifdef LATENCY_MODE\n",
     "#if CUT == 10\n    return TC_CONTINUE;\n#endif\n" + CLOCK
     + "#if CUT == 11\n    return now == 5 && fp.seq == 7 ? 1 : TC_CONTINUE;\n#endif\n#ifdef LATENCY_MODE\n"),
    ("netfilter.c", CLOCK + "    struct pkt_slot *slot;\n    struct journey *j = last_journey(from, now, &slot);\n",
     "#if CUT == 0\n    return NF_CUT_ADOPT(1);\n#endif\n" + CLOCK + "#if CUT == 1\n    return NF_CUT_ADOPT(now != 1);\n#endif\n"
     "    struct pkt_slot *slot;\n    struct journey *j = last_journey(from, now, &slot);\n"),
    ("netfilter.c", "    struct sighting s = {};\n    s.skb = skb;\n    s.flow_id = FLOW_ID(ct);\n",
     "#if CUT == 2\n    return NF_CUT_ADOPT(ttl != 0 || moved != 0);\n#endif\n    struct sighting s = {};\n    s.skb = skb;\n    s.flow_id = FLOW_ID(ct);\n"),
    ("netfilter.c", "    s.code = hop_code(hook, stage, 0);\n    s.terminal = hook == HOOK_NF_INPUT && stage == NAT_AFTER;\n    adopt_last",
     "#if CUT == 3\n    return NF_CUT_ADOPT(s.ifindex != 0 || s.out_ifindex != 1);\n#endif\n"
     "    s.code = hop_code(hook, stage, 0);\n    s.terminal = hook == HOOK_NF_INPUT && stage == NAT_AFTER;\n    adopt_last"),
    ("netfilter.c", "    u32 ctinfo = nfct & NFCT_INFOMASK;\n#ifndef SIGHTING_EVENTS\n    int zero = 0;\n"
     "    struct last_sighting *last = nf_last.lookup(&zero);\n    if (!last)\n        return 1;\n",
     "    u32 ctinfo = nfct & NFCT_INFOMASK;\n#if CUT == 20\n    return 1;\n#endif\n#ifndef SIGHTING_EVENTS\n"
     "    int zero = 0;\n    struct last_sighting *last = nf_last.lookup(&zero);\n    if (!last)\n        return 1;\n"
     "#if CUT == 21\n    return 1;\n#endif\n"),
    ("netfilter.c", "        struct last_sighting *from = nf_known(last, skb, hook, stage, nfct);\n"
     "        if (from && nf_append(",
     "        struct last_sighting *from = nf_known(last, skb, hook, stage, nfct);\n#if CUT == 22\n"
     "        if (from)\n            return 1;\n#endif\n        if (from && nf_append("),
    ("journey.h", "is_drop ? DROP_WINDOW_NS : (s64)FP_WINDOW_NS);\n",
     "is_drop ? DROP_WINDOW_NS : (s64)FP_WINDOW_NS);\n#if CUT == 12\n    if (sensor == SENSOR_TC) {\n"
     "        volatile u64 keep = (u64)(long)seen; /* or the compiler drops the search: both returns are 'no journey' */\n"
     "        return keep == 1 ? -2 : -1;\n    }\n#endif\n"),
)
# A netfilter fast path cut short still takes over the last sighting, as the
# whole one does (nf_append): without it the next hook of the packet finds
# no last sighting of its own and takes the full path, and the cut reads
# dearer than the whole (session 16: n2 read 50-95 ns over n1 a run, of
# which nf_known itself was ~6).
NF_CUT_ADOPT = ("#define NF_CUT_ADOPT(v) ({ adopt_last(last, from, skb); last->nfct = nfct; "
                "last->rank = nf_rank(hook, stage); (v); })\n")
EMIT = ("events.ringbuf_output(j, __builtin_offsetof(struct journey, hops) + used * sizeof(struct jhop),\n"
        "                              BPF_RB_NO_WAKEUP)")
CUT_NUMBERS = {"n0": 20, "n1": 21, "n2": 22, "f0": 0, "f1": 1, "f2": 2, "f3": 3, "c0": 10, "c1": 11, "c2": 12}
VARIANTS = ("noop", "n0", "n1", "n2", "f0", "f1", "f2", "f3", "c0", "c1", "c2", "noemit", "full")


def _sub(text: str, old: str, new: str) -> str:
    if text.count(old) != 1:
        raise SystemExit(f"bench_bpf_breakdown: the sources changed; expected once:\n{old}")
    return text.replace(old, new)


def build(variant: str, where: Path) -> Path:
    """A copy of this tree whose bpf/ stops at `variant`'s cut."""
    tree = where / variant
    for part in ("bpf", "tracer"):
        shutil.copytree(REPO / part, tree / part, ignore=shutil.ignore_patterns("__pycache__"))
    src = {name: (tree / "bpf" / name).read_text() for name in ("tc.c", "netfilter.c", "journey.h")}
    for name, old, new in CUTS:
        src[name] = _sub(src[name], old, new)
    if variant == "noemit":
        src["journey.h"] = _sub(src["journey.h"], EMIT, "(j->end == 99)")  # 0 = "written": counted as emitted
    for name, text in src.items():
        (tree / "bpf" / name).write_text(text)
    head = (f"#define CUT {CUT_NUMBERS.get(variant, -1)}\n" + NF_CUT_ADOPT
            + ("#define TRACER_NOOP 1\n" if variant == "noop" else ""))
    common = tree / "bpf" / "common.h"
    common.write_text(head + common.read_text())
    return tree


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--requests", type=int, default=3000, help="ab requests per variant per round")
    ap.add_argument("--variants", default=",".join(VARIANTS), help=f"comma-separated, of {','.join(VARIANTS)}")
    args = ap.parse_args()
    import numpy as np

    import bench_bpf as bb
    import bench_overhead as bo

    names = [v for v in args.variants.split(",") if v]
    if unknown := set(names) - set(VARIANTS):
        raise SystemExit(f"bench_bpf_breakdown: unknown variants {sorted(unknown)}")
    status = bo.lab_status()
    res: dict[str, list[dict]] = {v: [] for v in names}
    with tempfile.TemporaryDirectory(prefix="bench-bpf-cuts-") as tmp:
        trees = {v: build(v, Path(tmp)) for v in names}
        print(f"bench_bpf_breakdown: {args.rounds} rounds of ab -n {args.requests} -c 8 per variant; "
              f"load {load_average()}")
        for _r, v, got in bb.live_rounds(status, trees, args.rounds, args.requests):
            if got is not None:
                res[v].append(got["progs"])
    progs = sorted({p for rounds in res.values() for rnd in rounds for p in rnd})
    print(f"  {'program':13s} {'runs/req':>8s} " + " ".join(f"{v:>7s}" for v in names) + "   (median ns per run)")
    for p in progs:
        cells = []
        for v in names:
            per = [rnd.get(p, (0, 0)) for rnd in res[v]]
            cells.append(np.median([ns / c for ns, c in per if c]) if any(c for _, c in per) else float("nan"))
        runs = np.median([rnd.get(p, (0, 0))[1] / args.requests for rnd in res.get("full", res[names[-1]])] or [0])
        print(f"  {p:13s} {runs:8.1f} " + " ".join(f"{c:7.0f}" for c in cells))
    print(f"  load after: {load_average()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""What hiding kernel addresses costs where records leave the kernel
(tracer/opaque_ids.py, called by the drain on every batch), beside the
drain's own copy of the same batch: ns per journey record, median of
rounds, for a few numbers of distinct flows and sk_buffs per batch.

    .venv/bin/python scripts/bench_opaque_ids.py [--rounds 15]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tracer import events  # noqa: E402
from tracer.opaque_ids import AddressHasher  # noqa: E402

BATCH = 65536  # the drain's largest read


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=15)
    args = ap.parse_args()
    rng = np.random.default_rng(12)
    hasher = AddressHasher(b"k" * 32)
    hasher.hide(np.zeros(8, events.JOURNEY_DTYPE))  # Arrow's kernels load once
    print(f"{'flows':>7} {'skbs':>7}  {'copy ns/rec':>11}  {'hide ns/rec':>11}  {'hide/copy':>9}")
    for flows, skbs in ((100, 1000), (1000, 10000), (10000, 65536)):
        copy_ns, hide_ns = [], []
        for _ in range(args.rounds):
            recs = np.zeros(BATCH, events.JOURNEY_DTYPE)
            recs["flow_id"] = 0xFFFF888000000000 + rng.integers(0, flows, BATCH, dtype=np.uint64) * 0x140
            recs["skb"] = 0xFFFF888100000000 + rng.integers(0, skbs, BATCH, dtype=np.uint64) * 0x100
            raw = recs.view(np.uint8)
            t = time.perf_counter_ns()
            recs = raw.copy().view(events.JOURNEY_DTYPE)  # what the drain does to every batch anyway
            copy_ns.append((time.perf_counter_ns() - t) / BATCH)
            t = time.perf_counter_ns()
            hasher.hide(recs)
            hide_ns.append((time.perf_counter_ns() - t) / BATCH)
        c, h = statistics.median(copy_ns), statistics.median(hide_ns)
        print(f"{flows:>7} {skbs:>7}  {c:>11.1f}  {h:>11.1f}  {h / c:>9.2f}")


if __name__ == "__main__":
    main()

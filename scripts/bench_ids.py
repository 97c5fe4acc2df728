#!/usr/bin/env python3
"""Cost of printing ids as hex text (tracer/ids.py id_texts) in the journey
JSON, against the integers it printed before (Arrow's uint64 -> string
cast), side by side on the same journeys: the lab capture in tests/data,
repeated to about N sightings with distinct packet ids. Rounds alternate
the two; medians and the interquartile range of the per-round ratio.

Usage: scripts/bench_ids.py [N_SIGHTINGS] [--rounds R]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

import tracer.journey_json as journey_json
from tracer.capture import read_capture

LAB = Path(__file__).resolve().parents[1] / "tests" / "data" / "lab-http.arrows"


def integer_texts(values, json: bool = False) -> pa.Array:
    """The baseline: ids as the JSON printed them before (decimal, null for 0)."""
    v = np.asarray(values, np.uint64)
    return pc.fill_null(pc.cast(pa.array(v, pa.uint64(), mask=v == 0), pa.string()), "null")


def timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("sightings", nargs="?", type=int, default=200_000)
    ap.add_argument("--rounds", type=int, default=15)
    args = ap.parse_args()
    events = read_capture([str(LAB)]).events
    copies = max(1, args.sightings // events.num_rows)
    table = pa.concat_tables([events] * copies)
    pid = pc.fill_null(table["packet_id"], 0).to_numpy().copy()
    for r in range(copies):  # each copy its own packets
        pid[r * events.num_rows:(r + 1) * events.num_rows] += np.uint64(r) << np.uint64(32)
    table = table.set_column(table.schema.get_field_index("packet_id"), "packet_id", pa.array(pid, pa.uint64()))
    rows = journey_json.journey_rows(table)
    n = len(rows)
    ids = np.concatenate([rows.packet_id, rows.flow_id])
    hex_texts = journey_json.id_texts
    per = {"ids integer": [], "ids hex": [], "json integer": [], "json hex": []}
    for _ in range(args.rounds):
        per["ids integer"].append(timed(lambda: integer_texts(ids, json=True)) / len(ids))
        per["ids hex"].append(timed(lambda: hex_texts(ids, json=True)) / len(ids))
        journey_json.id_texts = integer_texts
        per["json integer"].append(timed(lambda: journey_json.journey_json_block(rows)) / n)
        journey_json.id_texts = hex_texts
        per["json hex"].append(timed(lambda: journey_json.journey_json_block(rows)) / n)
    print(f"{table.num_rows:,} sightings, {n:,} journeys, {args.rounds} rounds (alternating)")
    for what, unit in (("ids", "per id"), ("json", "per journey")):
        old, new = np.array(per[f"{what} integer"]), np.array(per[f"{what} hex"])
        ratio = new / old
        q1, q3 = np.percentile(ratio, [25, 75])
        label = "id text" if what == "ids" else "journey_json_block"
        print(f"{label:<20} {unit:<12} integer {np.median(old) * 1e9:8.1f} ns  hex {np.median(new) * 1e9:8.1f} ns  "
              f"ratio {np.median(ratio):.2f} (IQR {q1:.2f}-{q3:.2f})")


if __name__ == "__main__":
    main()

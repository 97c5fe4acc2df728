"""What the kernel leaves out rather than write a wrong journey
(events.JOURNEY_FAULTS, counted after the ends in bpf/journey.h's
journey_ends) reaches the summary, its JSON and the open-journey count; a
capture written when the kernel still counted `lost` journeys still opens
and reports them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np

from tests.unit.test_capture import table_of, write
from tracer import events
from tracer.kernel import counts
from tracer.render import Summary

REPO = Path(__file__).resolve().parents[2]


def _counts(opened: int, ends: dict[str, int], faults: dict[str, int]) -> np.ndarray:
    c = np.zeros(events.N_JOURNEY_COUNTS, np.int64)
    c[0] = opened
    for name, n in ends.items():
        c[events.JOURNEY_ENDS.index(name)] = n
    for name, n in faults.items():
        c[len(events.JOURNEY_ENDS) + events.JOURNEY_FAULTS.index(name)] = n
    return c


def test_faults_are_read_apart_from_the_ends():
    c = _counts(10, {"terminal": 5, "evicted": 1}, {"claim_failed": 3, "hop_refused": 2, "mismatch": 1})
    assert counts.journey_ends(c) == {"terminal": 5, "evicted": 1}
    assert counts.journey_faults(c) == {"claim_failed": 3, "hop_refused": 2, "mismatch": 1}


def test_open_journeys_are_the_opened_not_yet_emitted():
    """Faults are not ends: a claim that failed opened nothing."""
    c = _counts(10, {"terminal": 8, "drop": 1}, {"claim_failed": 4, "hop_refused": 2})
    assert counts.open_journeys(c) == 1
    assert counts.open_journeys(_counts(3, {"terminal": 3}, {})) == 0
    assert counts.open_journeys(np.zeros(0, np.int64)) == 0


def test_the_summary_says_what_was_left_out():
    s = Summary()
    s.set_journey_ends({"terminal": 4}, {"hop_refused": 2, "claim_failed": 1})
    text = s.render(color=False)
    assert "left out in slot races: hop refused 2, claim failed 1" in text
    assert s.to_dict()["journey_faults"] == {"hop_refused": 2, "claim_failed": 1}
    quiet = Summary()
    quiet.set_journey_ends({"terminal": 4})
    assert "slot races" not in quiet.render(color=False) and quiet.to_dict()["journey_faults"] == {}


def test_a_capture_from_when_lost_was_counted_still_reports_it(tmp_path):
    """Captures written before the close was decided in the journey slot may
    carry `lost` in their stats' journey_faults (events.JOURNEY_FAULTS no
    longer names it): `show` opens them and reports it as it did."""
    path = tmp_path / "old.arrows"
    w = write(path, [table_of(2)], close=False)
    w.add_row("stats", 0, {"events": {"journey": 2}, "lost": {"journey": 0}, "record": "journey",
                              "journey_ends": {"terminal": 2}, "journey_faults": {"lost": 3, "hop_refused": 1}})
    w.close()
    done = subprocess.run([sys.executable, "-m", "tracer", "show", "--no-color", str(path)], cwd=REPO,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "left out in slot races: hop refused 1, lost 3" in done.stderr
    shown = subprocess.run([sys.executable, "-m", "tracer", "stats", "--format", "json", "--section", "lost", str(path)],
                           cwd=REPO, capture_output=True, text=True, timeout=60)
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["lost_events"] == {"journey": {"events": 2, "lost": 0}}

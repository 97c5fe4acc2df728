"""What the kernel leaves out rather than write a wrong journey
(events.JOURNEY_FAULTS, counted after the ends in bpf/journey.h's
journey_ends) reaches the summary, its JSON and the open-journey count."""

from __future__ import annotations

import numpy as np

from tracer import events
from tracer.kernel import counts
from tracer.render import Summary


def _counts(opened: int, ends: dict[str, int], faults: dict[str, int]) -> np.ndarray:
    c = np.zeros(events.N_JOURNEY_COUNTS, np.int64)
    c[0] = opened
    for name, n in ends.items():
        c[events.JOURNEY_ENDS.index(name)] = n
    for name, n in faults.items():
        c[len(events.JOURNEY_ENDS) + events.JOURNEY_FAULTS.index(name)] = n
    return c


def test_faults_are_read_apart_from_the_ends():
    c = _counts(10, {"terminal": 5, "evicted": 1}, {"claim_failed": 3, "hop_refused": 2, "lost": 1})
    assert counts.journey_ends(c) == {"terminal": 5, "evicted": 1}
    assert counts.journey_faults(c) == {"claim_failed": 3, "hop_refused": 2, "lost": 1}


def test_a_journey_lost_in_a_race_is_no_longer_open():
    """Opened minus emitted minus lost: else the sweep would run forever for
    a journey nobody can emit any more."""
    c = _counts(10, {"terminal": 8}, {"lost": 1, "claim_failed": 4})
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

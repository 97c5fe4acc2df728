"""A journey record's last hop is at first_ktime + its dt_ns; last_ktime is
its time only where dt_ns saturated. A record can carry a last_ktime of a hop
it does not hold (an appender writes last_ktime before it publishes its hop,
and a closer that read the hop count just before copies it: bpf/journey.h):
every reader gives the last hop its own time, live and from a capture."""

from __future__ import annotations

import numpy as np
import pytest

from tests.unit.test_decode import ctx
from tests.unit.test_journey_analysis import analyses, assert_same
from tests.unit.test_journey_capture import write
from tests.unit.test_journey_records import REQ_TUPLES, hop, record
from tracer import events, native_rows
from tracer.decode import decode
from tracer.expand import expand
from tracer.journey_records import journey_rows_of_records
from tracer.journey_rows import journey_rows, journeys_of_table
from tracer.last_hop import DT_SATURATED

T0 = 1_000_000
HOPS = [hop("tc_ingress", 7, dt=1), hop("nf_prerouting", 7, dt=1000), hop("tc_egress", 9, dt=2000)]
LATE = 5_000_000_000  # past dt_ns' 32 bits


def unpublished() -> np.ndarray:
    """Three hops, and the last_ktime of a fourth the closer left out."""
    r = record(1, T0, HOPS, REQ_TUPLES[:1])
    r["last_ktime"] = T0 + 9000
    return r


def late_drop() -> np.ndarray:
    r = record(2, T0, [hop("tc_ingress", 7, dt=1), hop("drop", 7, dt=DT_SATURATED)], REQ_TUPLES[:1], end="drop")
    r["last_ktime"] = T0 + LATE
    return r


def both() -> np.ndarray:
    """The two records as the drain gives them (its dtype, which the compiled passes read)."""
    parts = np.concatenate([unpublished(), late_drop()])
    recs = np.zeros(len(parts), events.JOURNEY_DTYPE)
    for name in parts.dtype.names:
        recs[name] = parts[name]
    return recs


@pytest.mark.parametrize("compiled", [True, False])
def test_the_last_hop_is_at_its_own_dt_where_records_are_read(compiled):
    recs = both()
    assert native_rows.usable(recs)  # compiled=True: the C's, where it was built
    rows = expand(recs)
    assert rows["ktime_ns"].tolist() == [T0 + 1, T0 + 1000, T0 + 2000, T0 + 1, T0 + LATE]
    js = {j.packet_id: j for j in journeys_of_table(journey_rows_of_records(recs, ctx(), compiled=compiled))}
    assert [h.dt_ns for h in js[1].hops] == [0, 999, 1999]
    assert js[2].hops[-1].dt_ns == LATE - 1
    assert js[1].last_ktime - js[1].first_ktime == 1999
    # the sighting path agrees
    by_rows = {j.packet_id: j for j in journeys_of_table(journey_rows(decode(rows, ctx())))}
    assert [h.dt_ns for h in by_rows[1].hops] == [0, 999, 1999]


def test_a_stored_record_with_a_later_last_ktime_reads_its_hops_in_stats(tmp_path):
    """journey rows read straight (tracer/journey_analysis.py) and laid out as
    sightings give the last hop the same time, its own."""
    path = tmp_path / "cap.arrows"
    write(path, [both()])
    new, old = analyses([path])
    assert_same(new, old)
    durations = {j.packet_id: j.last_ktime - j.first_ktime for j in new.slowest_journeys(5)}
    assert durations == {j.packet_id: j.last_ktime - j.first_ktime for j in old.slowest_journeys(5)}
    assert durations[1] == 1999 and durations[2] == LATE - 1

"""tracer/wallclock.py: journey times as text, checked against Python's
datetime (the batch forms, the one-value forms and split_times agree)."""

from __future__ import annotations

from datetime import datetime, timezone

import numpy as np

from tracer.wallclock import clock, clock_array, rfc3339, rfc3339_array, split_times

# the epoch's first second, leading zeros in the fraction, a second's last
# nanosecond, two values in one second, a far date; 0 is unknown
VALUES = [1, 1_764_468_448_000_000_007, 1_764_468_448_123_456_789, 1_764_468_448_999_999_999,
          1_764_468_449_000_450_000, 0, 4_102_444_799_000_000_001]


def _expected(ns: int, format: str, digits: int, suffix: str) -> str | None:
    if ns == 0:
        return None
    second, fraction = divmod(ns, 1_000_000_000)
    head = datetime.fromtimestamp(second, timezone.utc).strftime(format)
    return f"{head}{fraction // 10 ** (9 - digits):0{digits}d}{suffix}"


def test_rfc3339_and_clock_as_datetime_writes_them():
    assert rfc3339_array(VALUES).to_pylist() == [_expected(v, "%Y-%m-%dT%H:%M:%S.", 9, "Z") for v in VALUES]
    assert clock_array(VALUES).to_pylist() == [_expected(v, "%H:%M:%S.", 6, "") for v in VALUES]
    assert [rfc3339(v) for v in VALUES] == rfc3339_array(VALUES).to_pylist()
    assert [clock(v) for v in VALUES] == clock_array(VALUES).to_pylist()
    assert rfc3339(None) is None and clock(None) is None
    assert rfc3339_array([]).to_pylist() == [] and clock_array(np.array([], np.int64)).to_pylist() == []


def test_split_times_pieces_make_the_same_text():
    heads, which, fractions = split_times(VALUES, "%H:%M:%S.", 6)
    assert len(heads) == len(set(v // 1_000_000_000 for v in VALUES))  # one head per distinct second
    joined = [heads[w] + f for w, f in zip(which.tolist(), fractions.to_pylist())]
    assert [t for t, v in zip(joined, VALUES) if v] == [t for t in clock_array(VALUES).to_pylist() if t]


def test_clock_array_over_many_instants():
    """clock_array writes its digits with numpy (no calendar for a time of
    day): any instant up to 2096 and this year's, as datetime says."""
    rng = np.random.default_rng(7)
    values = np.concatenate([
        rng.integers(1, 4_000_000_000 * 10**9, 5_000),
        rng.integers(1_764_000_000 * 10**9, 1_765_000_000 * 10**9, 5_000),
        [999, 10**9 - 1, 10**9, 86_399 * 10**9 + 999_999_999, 86_400 * 10**9],
    ]).astype(np.int64)
    assert clock_array(values).to_pylist() == [_expected(int(v), "%H:%M:%S.", 6, "") for v in values]


def test_clock_array_unknown_times_are_nulls_among_known_ones():
    got = clock_array(np.array([0, 1_764_489_600 * 10**9 + 5_000, 0], np.int64))
    assert got.to_pylist() == [None, "08:00:00.000005", None] and got.null_count == 2

"""JourneyFeed's pacing: complete packets are taken for showing at most
every SHOW_EVERY_S once some were shown (a pass in between brings no
journeys: its readers must take None), and passes themselves run that
often from then on (before, every MIN_PASS_S: the first journeys show as
soon as they are complete); every pass for `explain` (show_every=0),
which waits for one reply."""

from __future__ import annotations

import time

import numpy as np

from tracer import feeds


class _Rows:
    num_rows = 1


class _Session:
    rules = None

    def read_records(self, *_):
        return np.zeros(0, dtype=[("n_hops", np.uint8)])

    def read_proxy_links(self):
        return []

    def now_ktime(self):
        return 10**12

    def journey_rows(self, records):
        return _Rows()


class _Hold:
    """A packet complete on every pass (rows are made only for some)."""

    def add(self, records):
        return records[:0]

    def pop_complete(self, idle_ns, now_ktime):
        return np.zeros(1, dtype=[("n_hops", np.uint8)])


def _passes(feed, n):
    feed.hold = _Hold()
    feed.begin()
    return [feed.take_pass().journeys for _ in range(n)]


def test_a_pass_before_the_next_show_brings_no_journeys(monkeypatch):
    monkeypatch.setattr(feeds, "MIN_PASS_S", 0.0)
    feed = feeds.JourneyFeed(_Session(), showing=True, show_every=10.0)
    feed.hold = _Hold()
    feed.begin()
    assert feed.take_pass().journeys is not None  # the first ones at once
    feed._pass_started = 0.0  # a pass with no time left to wait (a loop that fell behind)
    assert feed.take_pass().journeys is None  # the next show is not due: its readers take None


def test_after_the_first_show_passes_run_once_a_show(monkeypatch):
    monkeypatch.setattr(feeds, "MIN_PASS_S", 0.01)
    feed = feeds.JourneyFeed(_Session(), showing=True, show_every=0.1)
    t0 = time.monotonic()
    got = _passes(feed, 4)
    took = time.monotonic() - t0
    assert all(j is not None for j in got)  # every pass shows: none runs in between
    assert 0.3 <= took < 1.0  # the first at once, then three a show_every apart


def test_explain_takes_complete_packets_every_pass(monkeypatch):
    monkeypatch.setattr(feeds, "MIN_PASS_S", 0.0)
    got = _passes(feeds.JourneyFeed(_Session(), showing=True, show_every=0), 3)
    assert all(j is not None for j in got)

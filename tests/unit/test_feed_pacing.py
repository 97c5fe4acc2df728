"""JourneyFeed's pacing: complete packets are taken for showing at most
every SHOW_EVERY_S once some were shown (a pass in between brings no
journeys: its readers must take None), and every pass for `explain`
(show_every=0), which waits for one reply."""

from __future__ import annotations

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


def test_passes_between_shows_bring_no_journeys(monkeypatch):
    monkeypatch.setattr(feeds, "MIN_PASS_S", 0.0)
    got = _passes(feeds.JourneyFeed(_Session(), showing=True), 3)
    assert got[0] is not None and got[1] is None and got[2] is None


def test_explain_takes_complete_packets_every_pass(monkeypatch):
    monkeypatch.setattr(feeds, "MIN_PASS_S", 0.0)
    got = _passes(feeds.JourneyFeed(_Session(), showing=True, show_every=0), 3)
    assert all(j is not None for j in got)

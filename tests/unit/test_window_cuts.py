"""CaptureAnalysis' two paths over journey rows (read off the list columns,
and laid out as sightings: the tests' oracle) cut packets with one window
(packet_window.journey_window). A cut forced by max_held_rows hands on a
packet whose later part is still to come, which then reads as two packets:
when the paths cut at different rows they counted different packets.
Forced cuts here, on a capture with packets in two parts: the same results."""

from __future__ import annotations

from tests.unit.test_journey_analysis import analyses, assert_same, synthetic
from tracer import packet_window


def test_forced_cuts_split_packets_alike_on_both_paths(tmp_path, monkeypatch):
    path = tmp_path / "parts.arrows"
    synthetic(path, 300_000, mess=True, seed=5, across=True)  # packets in two parts, some a batch apart
    monkeypatch.setattr(packet_window, "MIN_CHUNK_ROWS", 1 << 9)
    monkeypatch.setattr(packet_window, "MAX_HELD_ROWS", 1 << 12)  # journey rows: 512 held at most
    forced = []
    cut = packet_window.PacketWindow._cut
    monkeypatch.setattr(packet_window.PacketWindow, "_cut",
                        lambda self, cutoff: (cut(self, cutoff), forced.append(self.forced))[0])
    new, old = analyses([path])
    assert max(forced) >= 2, "the window cut early, whole or not"
    assert new.packets == old.packets > 30_000
    assert_same(new, old)

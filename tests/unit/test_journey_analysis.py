"""`tracer stats` on journey rows (schema 2) read straight off their list
columns (tracer/journey_analysis.py) gives exactly what laying them out as
sighting rows and analysing those gives (the sighting path is the oracle):
every count, segment, percentile, flow, drop, plot sample and slowest
journey, and the text, JSON and CSV `tracer stats` prints; including the
packets the fast path hands back (parts, hops out of order, two drops, two
containers) and several recordings whose files number their places
differently."""

from __future__ import annotations

import importlib.util
import io
import re
import sys
from contextlib import redirect_stdout
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from tests.unit.test_decode import HOST_NS, ctx
from tests.unit.test_journey_capture import META, write
from tests.unit.test_journey_records import H, records
from tracer import events
from tracer.analysis import CaptureAnalysis
from tracer.capture.reader import open_capture
from tracer.capture.writer import CaptureWriter
from tracer.cli.analyze import _write_csv, _write_json
from tracer.render import stats_text as _text
from tracer.places import Place

ROOT = Path(__file__).resolve().parents[2]


def _synth():
    spec = importlib.util.spec_from_file_location("synth_journeys", ROOT / "scripts" / "synth_journeys.py")
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(ROOT / "scripts"))
    return module


synth = _synth()


def analyses(paths, **kw) -> tuple[CaptureAnalysis, CaptureAnalysis]:
    paths = [str(p) for p in paths]
    return (CaptureAnalysis.of_capture(open_capture(paths), **kw),
            CaptureAnalysis.of_capture(open_capture(paths), journeys=False, **kw))


def printed(fn, *args) -> str:
    out = io.StringIO()
    with redirect_stdout(out):
        fn(*args)
    return out.getvalue()


def assert_same(new: CaptureAnalysis, old: CaptureAnalysis) -> None:
    a, b = new.analyse(), old.analyse()
    assert a.to_dict() == b.to_dict()
    assert _text(a, None, 50) == _text(b, None, 50)
    assert printed(_write_json, a, None) == printed(_write_json, b, None)
    for section in ("segments", "flows", "drops", "lost"):
        assert printed(_write_csv, a, section) == printed(_write_csv, b, section)
    assert a.samples.keys() == b.samples.keys()
    for k in a.samples:
        assert np.array_equal(a.samples[k], b.samples[k]), k
    ta, tb = new.throughput(), old.throughput()
    assert all(np.array_equal(ta[k], tb[k]) for k in ta)
    sa, sb = new.slowest_journeys(20), old.slowest_journeys(20)
    assert [(j.packet_id, [h.label for h in j.hops], j.verdict) for j in sa] == \
        [(j.packet_id, [h.label for h in j.hops], j.verdict) for j in sb]


def test_the_records_of_every_kind_as_the_sighting_path(tmp_path):
    path = tmp_path / "cap.arrows"
    write(path, [records()[:4], records()[4:]])
    new, old = analyses([path])
    assert new.events == old.events > 0
    assert_same(new, old)


def synthetic(path: Path, sightings: int, mess: bool = False, seed: int = 0, across: bool = False) -> int:
    """A synth_journeys capture; with ``mess``, some packets the fast path
    must hand back: split in parts, hops out of order, two drops, two
    containers, no drop reason, a packet id 0; with ``across``, the first
    packet of each batch has a later part at the end of the next batch."""
    rng = np.random.default_rng(seed)
    c = synth.context()
    c.book.places[(HOST_NS, 11)] = Place("veth-db", "veth", HOST_NS, "id-db", "db")
    n = 0
    carried = None
    with CaptureWriter(path, META, journeys=True) as w:
        for recs in synth.chunks(sightings, 1e6, seed=seed, records_per_chunk=2000):
            if across:
                if carried is not None:
                    recs["packet_id"][-4:] = carried
                carried = recs["packet_id"][0]
            if mess and len(recs) >= 40:
                pick = rng.choice(len(recs), size=40, replace=False)
                a, b, c2, d, e, f = np.split(pick, [8, 16, 24, 32, 36])
                # hops out of order
                recs["hops"]["dt_ns"][a, 1] = recs["hops"]["dt_ns"][a, 2] + 5
                # a second container on the way
                recs["hops"]["ifindex"][b, 1] = 11
                # the last hop a drop twice / a drop in the middle
                for r in c2:
                    k = int(recs["n_hops"][r])
                    if k < events.MAX_HOPS:
                        recs["hops"][r, k] = recs["hops"][r, k - 1]
                        recs["hops"]["code"][r, k] = H["drop"]
                        recs["hops"]["code"][r, k - 1] = H["drop"] if r % 2 else recs["hops"]["code"][r, k - 1]
                        recs["n_hops"][r] = k + 1
                        recs["drop_reason"][r] = 12
                # no packet id
                recs["packet_id"][d] = 0
                # a packet in two parts: the same id, the second later
                recs["packet_id"][e[1:]] = recs["packet_id"][e[0]]
                # a drop whose reason the context does not name
                for r in f:
                    k = int(recs["n_hops"][r])
                    recs["hops"]["code"][r, k - 1] = H["drop"]
                    recs["drop_reason"][r] = 77
            w.add_journeys(recs, c)
            if across:
                w.flush()  # a batch of its own
            n += int(recs["n_hops"].sum())
        w.add_row("stats", 0, {"events": {"journey": n}, "lost": {"journey": 3}, "record": "journey"})
    return n


@pytest.mark.parametrize("mess", [False, True])
def test_a_synthetic_capture_as_the_sighting_path(tmp_path, mess, monkeypatch):
    path = tmp_path / "syn.arrows"
    synthetic(path, 60_000, mess=mess)
    handed_back = []
    add = CaptureAnalysis.add
    monkeypatch.setattr(CaptureAnalysis, "add", lambda self, t: (handed_back.append(t.num_rows), add(self, t)))
    new = CaptureAnalysis.of_capture(open_capture([str(path)]))
    assert (sum(handed_back) > 0) == mess, "only the messed-up packets go the sighting way"
    monkeypatch.undo()
    old = CaptureAnalysis.of_capture(open_capture([str(path)]), journeys=False)
    assert new.packets == old.packets > 6000
    assert_same(new, old)
    a = new.analyse()
    assert a.lost == {"journey": {"events": a.lost["journey"]["events"], "lost": 3}}
    if mess:
        assert a.verdicts["dropped"] > 0


def test_recordings_that_number_their_places_differently(tmp_path):
    """Two recordings (rotated into parts) read together: the second met its
    places in another order, so its ids mean other places."""
    first = tmp_path / "a.arrows"
    synthetic(first, 20_000, seed=1)
    second = tmp_path / "b.arrows"
    recs = records()
    c = ctx()
    with CaptureWriter(second, META, journeys=True, rotate_size=1) as w:
        for part in (recs[5:], recs[:5], recs):  # other places first
            w.add_journeys(part, c)
            w.flush()
            w.tick()
    parts = [str(p) for p in w.paths]
    assert len(parts) > 1
    new, old = analyses([first, *parts])
    assert_same(new, old)
    containers = {f.container for f in new.analyse().flows}
    assert {"tracer-lab-web", "web"} <= containers


def test_report_content_is_the_same(tmp_path):
    from tracer.paths import PathStats
    from tracer.report import render_report

    path = tmp_path / "syn.arrows"
    synthetic(path, 30_000, mess=True, seed=3)
    html = []
    for journeys in (True, False):
        capture = open_capture([str(path)])
        paths = PathStats(capture.metadata)
        ca = CaptureAnalysis.of_capture(capture, also=(paths,), journeys=journeys)
        text = render_report(ca, paths.finish(), files=[str(path)])
        html.append(re.sub(r"<dc:date>[^<]*</dc:date>", "", text))  # when the plots were drawn
    assert html[0] == html[1]


def test_a_capture_recorded_on_the_lab_as_the_sighting_path():
    """tests/data/lab-http.arrows: real journey records of the lab's HTTP."""
    path = ROOT / "tests" / "data" / "lab-http.arrows"
    new, old = analyses([path])
    assert new.packets > 30
    assert_same(new, old)


def test_a_capture_rotated_into_hundreds_of_parts_reads_as_one_file(tmp_path):
    """`record -C` with a tiny size: every part a complete stream repeating
    the schema, metadata and places. Stats and report over the parts are
    those of the same records in one file (the report names the files in
    a line, not a list of thousands)."""
    from tracer.paths import PathStats
    from tracer.report import render_report

    batches = list(synth.chunks(40_000, 1e6, records_per_chunk=20))
    one = tmp_path / "one.arrows"
    c = synth.context()
    with CaptureWriter(one, META, journeys=True) as w:
        for recs in batches:
            w.add_journeys(recs, c)
    (tmp_path / "parts").mkdir()
    with CaptureWriter(tmp_path / "parts" / "cap.arrows", META, journeys=True, rotate_size=1) as w:
        for recs in batches:
            w.add_journeys(recs, c)
            w.flush()
            w.tick()
    parts = [str(p) for p in w.paths]
    assert len(parts) > 200

    def report(files):
        capture = open_capture(files)
        paths = PathStats(capture.metadata)
        ca = CaptureAnalysis.of_capture(capture, also=(paths,))
        text = render_report(ca, paths.finish(), files=files)
        return ca, re.sub(r"<dc:date>[^<]*</dc:date>", "", text)

    (a, html_one), (b, html_parts) = report([str(one)]), report(parts)
    assert a.analyse().to_dict() == b.analyse().to_dict()
    files_row = re.compile(r"<tr><td class=\"\">files</td><td class=\"\">[^<]*</td></tr>")
    assert f"{len(parts):,} files: {parts[0]}" in html_parts and parts[len(parts) // 2] not in html_parts
    assert len(files_row.findall(html_parts)) == 1
    assert files_row.sub("", html_one) == files_row.sub("", html_parts)


def test_places_registered_while_a_chunk_is_analysed_do_not_change_its_labels(tmp_path):
    """The reader registers the next files' places on its own thread (the
    analysis reads ahead) while a chunk of journey rows is analysed: the
    chunk is read against the places there were when its analysis began.
    Before, a place registered in between (a later part of a rotated
    capture met a new interface) shifted the decoding of every hop's
    (hook, stage, place) key: `tracer stats` on a capture of the busy lab
    printed 'nf_prerouting → nf_prerouting' and '?' hops now and then."""
    from tracer.journey_capture import JourneyBatch

    path = tmp_path / "cap.arrows"
    write(path, [records()])
    stream = open_capture([str(path)])
    rows = pa.Table.from_batches([x.rows for x in stream.batches(journeys=True) if isinstance(x, JourneyBatch)])
    registry = stream.places
    calm = CaptureAnalysis(None, stream.metadata)
    calm.add_journeys(rows, registry)

    class Meanwhile(list):
        """A place registered by the reader right after the analysis first looks."""

        def __len__(self) -> int:
            n = super().__len__()
            if not self.added:
                self.added = True
                self.append(Place("veth-new", events.VETH, HOST_NS))
            return n

    places = Meanwhile(registry.values)
    places.added = False
    registry.values = places
    busy = CaptureAnalysis(None, stream.metadata)
    busy.add_journeys(rows, registry)
    assert places.added
    a, b = busy.analyse(), calm.analyse()
    assert [(s.direction, s.segment, s.count) for s in a.segments] == [(s.direction, s.segment, s.count) for s in b.segments]
    assert a.to_dict() == b.to_dict()

"""The compiled journey layout (native/journey_layout.c, tracer._native)
and its numpy twin (tracer/journey_layout.py) give the same columns.

Both run on the hand-made records of test_journey_records (drops, parts,
NAT steps, ICMP) as the kernel lays them out, and on records of random
bytes: hop and tuple counts past what a record holds, none at all, tuple
indices past the record's, every code bit. The extension is optional: when
it is not built these tests fail rather than skip (scripts/setup.sh builds
it; CI runs setup first)."""

from __future__ import annotations

import numpy as np
import pytest

from tests.unit.test_journey_records import records
from tracer import events, journey_layout, native
from tracer.journey_layout import HOP_COLUMNS, LAYOUT, RECORD_COLUMNS, TUPLE_COLUMNS, compiled_usable, layout, layout_numpy


def module():
    m = native.native()
    assert m is not None, f"tracer._native is not built: {native.why_not()}"
    return m


def random_records(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    recs = np.frombuffer(rng.integers(0, 256, n * events.JOURNEY_SIZE, dtype=np.uint8).tobytes(),
                         events.JOURNEY_DTYPE).copy()
    recs["n_hops"] = rng.integers(0, 20, n)  # 0 (not kept) to more than a record holds
    recs["n_tuples"] = rng.integers(0, 7, n)
    return recs


def used(columns) -> dict:
    """The columns a layout wrote: the tuple lists' offsets and tuples only as far as the lists go."""
    lists = columns.n_lists
    tuples = int(columns.records["tuple_offsets"][lists])
    return {"records": {**columns.records, "tuple_offsets": columns.records["tuple_offsets"][:lists + 1]},
            "hops": columns.hops,
            "tuples": {name: c[:16 * tuples] if name.endswith("addr") else c[:tuples] for name, c in columns.tuples.items()}}


def assert_same(a, b) -> None:
    assert np.array_equal(a.kept, b.kept)
    assert a.place_keys == b.place_keys
    assert np.array_equal(a.path_words, b.path_words) and np.array_equal(a.path_starts, b.path_starts)
    assert a.n_lists == b.n_lists
    ua, ub = used(a), used(b)
    for part in ("records", "hops", "tuples"):
        x, y = ua[part], ub[part]
        assert x.keys() == y.keys()
        for name in x:
            assert x[name].dtype == y[name].dtype, (part, name)
            assert np.array_equal(x[name], y[name]), (part, name)


def test_paths_and_tuple_lists_are_laid_out_once_each():
    """The same records twice over: as many paths and tuple lists as once,
    each record numbered as its twin, the tuples laid out once."""
    module()
    once, twice = records().astype(events.JOURNEY_DTYPE), np.concatenate([records()] * 2).astype(events.JOURNEY_DTYPE)
    a, b = layout(once), layout(twice)
    assert_same(b, layout_numpy(twice))
    k = len(a)
    assert b.n_lists == a.n_lists < k and len(b.path_starts) == len(a.path_starts) <= k + 1
    for name in ("path", "tuple_list"):
        assert np.array_equal(b.records[name][:k], b.records[name][k:]), name
    assert np.array_equal(used(a)["tuples"]["sport"], used(b)["tuples"]["sport"])
    # a record's own tuples are its list's
    nt = np.clip(once["n_tuples"][once["n_hops"] > 0], 1, events.MAX_TUPLES)
    offsets = a.records["tuple_offsets"]
    for j, n in enumerate(nt.tolist()):
        at = offsets[a.records["tuple_list"][j]]
        assert offsets[a.records["tuple_list"][j] + 1] - at == n
        assert a.tuples["sport"][at:at + n].tolist() == once[a.kept[j]]["tuples"]["sport"][:n].tolist()


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_compiled_and_numpy_give_the_same_columns_on_random_records(seed):
    module()
    recs = random_records(3000, seed)
    assert compiled_usable(recs)
    compiled, reference = layout(recs), layout_numpy(recs)
    assert_same(compiled, reference)
    assert 0 < len(compiled) < len(recs)  # records without hops are left out
    path = journey_layout.path_fields(compiled.hop_words(np.arange(len(compiled))))
    assert path["tuple"].max() == events.MAX_TUPLES - 1
    assert np.diff(compiled.records["hop_offsets"]).max() == events.MAX_HOPS
    # every hop's place key is its own (netns << 32 | in-container << 31 | ifindex), in its path too
    h = compiled.hops
    assert np.array_equal(path["place_index"], h["place_index"])
    kept = recs[compiled.kept]
    nh = np.diff(compiled.records["hop_offsets"])
    used = np.arange(events.MAX_HOPS) < nh[:, None]
    code, ifindex = kept["hops"]["code"][used], kept["hops"]["ifindex"][used]
    netns = np.where(code & 0x0F == events.HOOKS.index("drop"), np.repeat(kept["drop_netns"], nh), 0)
    keys = np.array(compiled.place_keys, np.uint64)[h["place_index"]]
    assert np.array_equal(keys, netns.astype(np.uint64) << np.uint64(32)
                          | ((code & events.HOP_IN_CT_BIT) != 0).astype(np.uint64) << np.uint64(31) | ifindex.astype(np.uint64))
    assert len(set(compiled.place_keys)) == len(compiled.place_keys) > 64  # the key table grew past its first size
    assert len(compiled.path_starts) - 1 == len(compiled)  # random hops: no two paths alike, the table grew


def test_compiled_and_numpy_agree_on_the_hand_made_journeys():
    module()
    kernel = records().astype(events.JOURNEY_DTYPE)
    compiled = layout(kernel)
    assert_same(compiled, layout_numpy(kernel))
    r = compiled.records
    assert r["packet_id"].tolist()[:3] == [101, 101, 202]
    assert r["drop_reason"].tolist()[:3] == [-1, 12, -1]  # a reason only where a hop is a drop
    assert r["ip_id"][0] == 101 and r["length"][0] == 60  # network order read as numbers
    assert compiled.tuples["sport"][0] == 40000 and compiled.tuples["dport"][0] == 8000


def test_records_numpy_reordered_are_laid_out_by_numpy_alike():
    """np.concatenate gives records back in native byte order: the compiled
    twin reads only the kernel's layout, so those take the numpy path."""
    native_order = records()
    assert native_order.dtype != events.JOURNEY_DTYPE and not compiled_usable(native_order)
    assert_same(layout(native_order), layout(native_order.astype(events.JOURNEY_DTYPE)))


def test_without_the_extension_the_numpy_twin_is_used(monkeypatch):
    monkeypatch.setattr(journey_layout, "native", lambda: None)
    recs = random_records(50, 9)
    assert not compiled_usable(recs)
    assert_same(layout(recs), layout_numpy(recs))


def test_wrong_sizes_and_counts_are_refused_before_writing():
    m = module()
    recs = random_records(20, 4)
    out = layout_numpy(recs)
    args = lambda data, kept, cols: (data, LAYOUT, kept, len(out.hops["place_index"]), len(out.tuples["sport"]),  # noqa: E731
                                     cols, tuple(out.hops.values()), tuple(out.tuples.values()))
    cols = tuple(out.records[name] for name, _ in RECORD_COLUMNS)
    flat = recs.view(np.uint8).reshape(-1)
    changed = recs.copy()
    changed["n_hops"][np.flatnonzero((recs["n_hops"] > 0) & (recs["n_hops"] < events.MAX_HOPS))[0]] += 1
    with pytest.raises(ValueError, match="counts"):  # records other than the ones the outputs were sized for
        m.journey_layout(*args(changed.view(np.uint8).reshape(-1), len(out), cols))
    with pytest.raises(ValueError, match="do not fit"):
        m.journey_layout(*args(flat[:-1], len(out), cols))
    with pytest.raises(ValueError, match="bytes"):
        m.journey_layout(*args(flat, len(out), (cols[0][:-1],) + cols[1:]))
    with pytest.raises(TypeError):
        m.journey_layout(*args(flat, len(out), cols[:-1]))
    with pytest.raises(ValueError, match="do not fit"):
        m.journey_layout(flat, (10_000,) + LAYOUT[1:], len(out), len(out.hops["place_index"]), len(out.tuples["sport"]),
                         cols, tuple(out.hops.values()), tuple(out.tuples.values()))
    # offsets near 2^63 (the sum with a width would overflow) and negative ones are refused, not read
    for at, match in ((1, "outside the record"), (6, "do not fit"), (21, "do not fit")):
        for offset, why in ((2**63 - 3, match), (-8, "negative")):
            bad = LAYOUT[:at] + (offset,) + LAYOUT[at + 1:]
            with pytest.raises(ValueError, match=why):
                m.journey_layout(flat, bad, len(out), len(out.hops["place_index"]), len(out.tuples["sport"]),
                                 cols, tuple(out.hops.values()), tuple(out.tuples.values()))


def test_outputs_that_overlap_each_other_or_the_records_are_refused():
    """Every output is written once and a hop's place key read back from
    two of them: an output that is another, or lies in the records, would
    give wrong rows; refused before anything is written."""
    m = module()
    recs = random_records(20, 5)
    out = layout_numpy(recs)
    flat = recs.view(np.uint8).reshape(-1)
    cols = tuple(out.records[name] for name, _ in RECORD_COLUMNS)
    hops = {name: out.hops[name] for name, _ in HOP_COLUMNS}

    def call(hop_cols):
        return m.journey_layout(flat, LAYOUT, len(out), len(hops["place_index"]), len(out.tuples["sport"]),
                                cols, tuple(hop_cols.values()), tuple(out.tuples[name] for name, _ in TUPLE_COLUMNS))

    before = flat.copy()
    with pytest.raises(ValueError, match="overlaps"):
        call({**hops, "dt_ns_b1": hops["dt_ns_b0"]})  # two outputs, one array
    with pytest.raises(ValueError, match="overlaps"):
        call({**hops, "dt_ns_b0": flat[:len(hops["dt_ns_b0"])]})  # an output inside the records
    assert np.array_equal(flat, before)
    call(hops)  # the same arguments, each its own: laid out

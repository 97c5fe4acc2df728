"""native/journey_rows.c called directly with hostile arguments: each is a
clean ValueError or TypeError, never a read or write out of bounds.

`trace` only calls the passes through tracer/native_rows.py, which builds
every argument itself; these are the calls a direct caller could make
(review of 24504e3, findings 1-4). Before the fix each crashed the process
(a segfault, or an out-of-bounds read that AddressSanitizer reports), so
they run in a child process: a crash fails the case it happened in instead
of killing pytest.

- journey_facts with an output column that is an input (netns written over
  the hooks it then judges) or another output (netns over the roles or the
  containers it then uses as indices);
- journey_facts with table sizes whose product wraps int64 (an empty
  terminal table passing the size check);
- journey_facts while another thread rewrites the hook codes (checked
  before the call, out of range during it);
- journey_hops with the packets' first hops (``starts``) sharing memory
  with another output column, or an output inside the records;
- float64, uint64 and big-endian columns (8-byte items but not int64);
- the text writers, the address ids and the segment groups (native/parts.c
  load_column, the one column loader): each column is exactly the type its
  call names, int64, or uint64 for the ids; before, any 8-byte integer was
  taken (a uint64 code column, an int64 address) and an output of any
  8-byte type (float64 durations or ids) was written as integers.
"""

from __future__ import annotations

import mmap
import multiprocessing
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tracer import events, native_rows

REPO = Path(__file__).resolve().parents[2]
I64 = np.int64


def z(n: int, dtype=I64) -> np.ndarray:
    return np.zeros(n, dtype)


def facts_args(hops: int = 1, sizes=(10, 4, 1, 8, 0, 0), terminal=None, hook=None) -> list:
    """journey_facts' arguments for one packet of ``hops`` hops at one
    place, tables sized by ``sizes`` (as native_rows passes them)."""
    hop_in = (z(hops) if hook is None else hook, z(hops), z(hops), np.full(hops, -1, I64))
    place_tables = tuple(z(1) for _ in range(5))
    terminal = z(sizes[0] * sizes[1] * sizes[2]) if terminal is None else terminal
    containers = (np.ones(1, I64), z(1), np.ones(1, I64), z(1))
    return [hop_in, np.array([0, hops], I64), place_tables, terminal, sizes, containers,
            tuple(z(hops) for _ in range(5)), tuple(z(1) for _ in range(5))]


def with_netns(args: list, netns: int) -> list:
    """The only place's netns set to ``netns`` (a code far past every table)."""
    tables = list(args[2])
    tables[4] = np.array([netns], I64)
    args[2] = tuple(tables)
    return args


def replaced(args: list, i: int, j: int, value) -> list:
    """args[i][j] = value (the arguments are tuples of columns)."""
    group = list(args[i])
    group[j] = value
    args[i] = tuple(group)
    return args


def hops_args(records: np.ndarray) -> tuple[np.ndarray, list, list]:
    """journey_hops' records, packet and hop columns for ``records`` (the
    ids uint64, the rest int64)."""
    kept = int(np.count_nonzero(records["n_hops"]))
    hops = int(np.minimum(records["n_hops"], events.MAX_HOPS).sum())
    return (records.view(np.uint8).reshape(-1), [*np.zeros((2, kept), np.uint64), *np.zeros((7, kept), I64), z(kept + 1)],
            list(np.zeros((11, hops), I64)))


def call_hops(m, raw, packet_cols, hop_cols):
    return m.journey_hops(raw, native_rows.LAYOUT, native_rows._ICMP, 0, tuple(packet_cols), tuple(hop_cols))


def some_records() -> np.ndarray:
    from tests.unit.test_native_rows import kernel, odd_records
    return kernel(odd_records())


# --- the cases that crashed: each returns what the call gave ---------------

def case_facts_output_is_the_hook_input(m):
    args = with_netns(facts_args(), 1 << 40)
    return m.journey_facts(*replaced(args, 6, 4, args[0][0]))  # netns written over the hooks


def case_facts_role_output_is_the_netns_output(m):
    args = with_netns(facts_args(), 1 << 40)
    return m.journey_facts(*replaced(args, 6, 0, args[6][4]))  # roles read back as netns values


def case_facts_container_output_is_the_netns_output(m):
    args = with_netns(facts_args(), 1 << 40)
    return m.journey_facts(*replaced(args, 6, 2, args[6][4]))  # containers read back as netns values


def case_facts_output_overlaps_part_of_an_input(m):
    hops = 4
    shared = z(2 * hops)
    args = facts_args(hops)
    args = replaced(args, 0, 2, shared[:hops])  # the place codes ...
    return m.journey_facts(*replaced(args, 6, 3, shared[hops - 1:2 * hops - 1]))  # ... share a word with an output


def case_facts_sizes_wrap_int64(m):
    # 2^30 * 2^30 * 16 = 2^64: an empty terminal table would pass the size check
    return m.journey_facts(*facts_args(sizes=(1 << 30, 1 << 30, 16, 8, 0, 0), terminal=z(0), hook=np.array([5], I64)))


def _flip_forever(memory: mmap.mmap, words: list[int], parent: int) -> None:
    """In a child process: flip the given words of ``memory`` between far
    out of range and 0 until the parent is gone or ends this process."""
    shared = np.frombuffer(memory, I64)
    while os.getppid() == parent:
        for _ in range(1000):
            shared[words] = 1 << 40
            shared[words] = 0


def case_facts_codes_rewritten_during_the_call(m):
    """Another process flips the last hop's hook and place codes between
    far out of range and 0 in memory it shares with those columns, while
    the calls run: each call gives rows or a ValueError, whichever values
    it read (no Python thread: no GIL orders the writes and the checks)."""
    hops = 300_000
    memory = mmap.mmap(-1, 2 * 8 * hops)  # anonymous, shared with the child across fork
    shared = np.frombuffer(memory, I64)
    args = replaced(replaced(facts_args(hops), 0, 0, shared[:hops]), 0, 2, shared[hops:])  # hooks, places
    child = multiprocessing.get_context("fork").Process(target=_flip_forever,
                                                        args=(memory, [hops - 1, 2 * hops - 1], os.getpid()))
    child.start()
    outcomes = set()
    try:
        for _ in range(80):
            args[0][3][:] = -1  # no drop reasons (the call rewrites them in place)
            try:
                m.journey_facts(*args)
                outcomes.add("rows")
            except ValueError as e:
                outcomes.add(f"ValueError ({'out of range' in str(e)})")
    finally:
        child.terminate()
        child.join()
    return " or ".join(sorted(outcomes))


def case_hops_starts_is_the_flow_ids(m):
    records = some_records()
    records["flow_id"] = np.uint64(1 << 63) + np.uint64(12345)  # negative as an int64 index
    raw, packet_cols, hop_cols = hops_args(records)
    packet_cols[1] = packet_cols[9][:-1].view(np.uint64)
    return call_hops(m, raw, packet_cols, hop_cols)


def case_hops_starts_is_the_packet_ids(m):
    raw, packet_cols, hop_cols = hops_args(some_records())
    packet_cols[0] = packet_cols[9][:-1].view(np.uint64)
    return call_hops(m, raw, packet_cols, hop_cols)


def case_hops_output_inside_the_records(m):
    raw, packet_cols, hop_cols = hops_args(some_records())
    packet_cols[2] = raw[: 8 * len(packet_cols[2])].view(I64)  # directions written over the records
    return call_hops(m, raw, packet_cols, hop_cols)


CASES = {name[len("case_"):]: f for name, f in globals().items() if name.startswith("case_")}
EXPECTED = {
    "facts_output_is_the_hook_input": "ValueError: journey_facts: an output column overlaps",
    "facts_role_output_is_the_netns_output": "ValueError: journey_facts: an output column overlaps",
    "facts_container_output_is_the_netns_output": "ValueError: journey_facts: an output column overlaps",
    "facts_output_overlaps_part_of_an_input": "ValueError: journey_facts: an output column overlaps",
    "facts_sizes_wrap_int64": "ValueError: journey_facts: columns and tables do not fit together",
    "hops_starts_is_the_flow_ids": "ValueError: journey_hops: an output column overlaps",
    "hops_starts_is_the_packet_ids": "ValueError: journey_hops: an output column overlaps",
    "hops_output_inside_the_records": "ValueError: journey_hops: an output column overlaps",
}


def run_cases(names: list[str]) -> None:
    """In the child: each case's outcome on a line of its own, as it ends."""
    from tracer import native
    m = native.native()
    assert m is not None, native.why_not()
    for name in names:
        try:
            outcome = f"returned {CASES[name](m)!r}"
        except Exception as e:  # the outcome is what is compared
            outcome = f"{type(e).__name__}: {e}"
        print(f"{name}\t{outcome}", flush=True)


@pytest.fixture(scope="module")
def outcomes() -> dict:
    """Each case's outcome, the cases run in child processes: a case that
    ends its child is recorded as the crash it was, and the cases after it
    go on in a new child."""
    from tests.unit.test_native_text import module
    module()
    env = {k: v for k, v in os.environ.items() if k != "TRACER_NATIVE"}
    got: dict = {}
    left = list(CASES)
    while left:
        proc = subprocess.run([sys.executable, "-m", "tests.unit.test_native_rows_hostile", *left], cwd=REPO, env=env,
                              capture_output=True, text=True, timeout=300)
        got.update(line.split("\t", 1) for line in proc.stdout.splitlines() if "\t" in line)
        left = [name for name in left if name not in got]
        if left:
            got[left.pop(0)] = f"crashed the process: it ended with {proc.returncode} {proc.stderr[-2000:]}"
    return got


@pytest.mark.parametrize("case", sorted(EXPECTED))
def test_a_hostile_call_is_a_clean_error(outcomes, case):
    assert outcomes[case].startswith(EXPECTED[case]), outcomes[case]


def test_codes_rewritten_during_the_call_are_a_clean_error(outcomes):
    case = "facts_codes_rewritten_during_the_call"
    assert outcomes[case] in ("returned 'rows'", "returned 'ValueError (True)'", "returned 'ValueError (True) or rows'"), \
        outcomes[case]


# --- in process: no crash to fear -----------------------------------------

@pytest.mark.parametrize("dtype", [np.float64, np.uint64, ">i8"])
def test_only_int64_columns_are_taken(dtype):
    from tests.unit.test_native_text import module
    m = module()
    raw, packet_cols, hop_cols = hops_args(some_records())
    call_hops(m, raw, packet_cols, hop_cols)  # int64: fine
    for cols, j in ((packet_cols, 2), (hop_cols, 0)):
        bad = list(cols)
        bad[j] = bad[j].astype(dtype)
        with pytest.raises(TypeError, match="int64"):
            call_hops(m, raw, *((bad, hop_cols) if cols is packet_cols else (packet_cols, bad)))
    m.journey_facts(*facts_args())
    for group, j in ((0, 0), (0, 3), (2, 1), (6, 0), (7, 4)):
        args = facts_args()
        with pytest.raises(TypeError, match="int64"):
            m.journey_facts(*replaced(args, group, j, args[group][j].astype(dtype)))
    args = facts_args()
    args[1] = args[1].astype(dtype)
    with pytest.raises(TypeError, match="int64"):
        m.journey_facts(*args)


def test_only_the_drop_reasons_of_the_hop_inputs_are_written():
    from tests.unit.test_native_text import module
    m = module()
    args = facts_args(3)
    for j in range(3):  # hook, stage, place may be read-only
        args[0][j].flags.writeable = False
    m.journey_facts(*args)
    assert args[0][3].tolist() == [0, 0, 0], "-1 (no reason) becomes the null reason code"
    args[0][3].flags.writeable = False
    with pytest.raises(ValueError, match="read-only"):
        m.journey_facts(*args)


def test_starts_and_codes_are_checked_where_used():
    from tests.unit.test_native_text import module
    m = module()
    for starts in ([1, 3], [0, 2], [0, 4], [0, 2, 2, 3], [0, 3, 2, 3]):
        args = facts_args(3)
        args[1] = np.array(starts, I64)
        args[7] = tuple(z(len(starts) - 1) for _ in range(5))
        with pytest.raises(ValueError, match="do not fit"):
            m.journey_facts(*args)
    for group, j, value, what in ((0, 0, 10, "out of range"), (0, 1, -1, "out of range"), (0, 2, 1, "out of range"),
                                  (0, 3, 8, "drop reason"), (0, 3, -2, "drop reason")):
        args = facts_args(3)
        args[0][j][1] = value
        with pytest.raises(ValueError, match=what):
            m.journey_facts(*args)


def test_the_hop_and_tuple_layout_the_c_reads_is_checked(monkeypatch):
    assert native_rows._c_reads_hops_and_tuples()
    swapped = np.dtype({"names": ["dt_ns", "ifindex", "code", "ttl", "tuple", "_pad"],
                        "formats": ["<u4", "<u4", "u1", "u1", "u1", "u1"], "offsets": [0, 4, 8, 10, 9, 11],
                        "itemsize": 12})  # ttl and tuple swapped
    monkeypatch.setattr(events, "HOP_DTYPE", swapped)
    assert not native_rows._c_reads_hops_and_tuples()
    monkeypatch.undo()
    little_ports = np.dtype({"names": ["saddr", "daddr", "sport", "dport"],
                             "formats": [("u1", (16,)), ("u1", (16,)), "<u2", "<u2"], "offsets": [0, 16, 32, 34],
                             "itemsize": 40})
    monkeypatch.setattr(events, "TUPLE_DTYPE", little_ports)
    assert not native_rows._c_reads_hops_and_tuples()


class _Args:
    """A stand-in module that keeps what native_json_block and
    native_text_block would pass to the compiled writer."""

    def __getattr__(self, name):
        return lambda *args: setattr(self, "args", list(args))


def _writer_args(block, *extra) -> list:
    from tests.unit.test_native_text import both_ways, hostile_ctx
    jr = both_ways(hostile_ctx(1_000))[0]
    stand_in = _Args()
    block(jr, *extra, stand_in)
    return stand_in.args


@pytest.mark.parametrize("writer", ["journey_json", "journey_text"])
def test_the_text_writers_take_each_column_as_its_own_type(writer):
    from tests.unit.test_native_text import module
    from tracer.native_json import native_json_block
    from tracer.native_render import native_text_block
    m = module()
    args = _writer_args(native_json_block) if writer == "journey_json" else _writer_args(native_text_block, False)
    call = getattr(m, writer)
    assert isinstance(call(*args), bytes)
    for group, j, dtype, want in ((0, 0, np.int64, "uint64"), (0, 1, np.int64, "uint64"),  # the ids
                                  (0, 3, np.uint64, "int64"), (1, 0, np.uint64, "int64"),  # a code column
                                  (0, 0, np.float64, "uint64"), (1, 1, ">i8", "int64")):
        bad = replaced(list(args), group, j, args[group][j].astype(dtype))
        with pytest.raises(TypeError, match=rf"{writer}: \w+ must be a contiguous 64-bit integer array \({want}\)"):
            call(*bad)


def test_journey_hops_writes_the_ids_as_uint64_and_the_rest_as_int64():
    """As the text writers take them: journey_hops' packet_id and flow_id
    outputs are uint64 (an id past 2^63 is no negative int64), its other
    columns int64; each refuses the other signedness."""
    from tests.unit.test_native_text import module
    m = module()
    records = some_records()
    records["flow_id"][:] = np.uint64(1 << 63) + np.uint64(7)
    raw, packet_cols, hop_cols = hops_args(records)
    packets = call_hops(m, raw, packet_cols, hop_cols)[0]
    assert packets and packet_cols[1][:packets].max() >= np.uint64(1 << 63)
    for j, dtype, want in ((0, I64, "uint64"), (1, I64, "uint64"), (1, np.float64, "uint64"), (2, np.uint64, "int64")):
        bad = list(packet_cols)
        bad[j] = bad[j].astype(dtype)
        with pytest.raises(TypeError, match=rf"journey_hops: .+ must be a contiguous 64-bit integer array \({want}\)"):
            call_hops(m, raw, bad, hop_cols)


def test_address_ids_and_segment_outputs_are_their_own_type():
    from tests.unit.test_native_text import module
    m = module()
    words, out = np.arange(1, 5, dtype=np.uint64), np.empty(4, np.uint64)
    m.address_ids(words, out, 1, 2, 48)
    for bad_words, bad_out in ((words.view(np.int64), out), (words, out.view(np.float64)), (words, out.view(np.int64))):
        with pytest.raises(TypeError, match=r"address_ids: \w+ must be .* \(uint64\)"):
            m.address_ids(bad_words, bad_out, 1, 2, 48)
    hook, starts = np.zeros(3, I64), np.array([0, 3], I64)
    assert m.segment_groups(hook, hook, hook, starts, hook, z(1), 1, 1, 1, z(2)) == ([0], [2])
    with pytest.raises(TypeError, match=r"segment_groups: durations must be .* \(int64\)"):
        m.segment_groups(hook, hook, hook, starts, hook, z(1), 1, 1, 1, np.zeros(2, np.float64))



def test_address_ids_in_place_but_never_over_addresses_not_yet_read():
    from tests.unit.test_native_text import module
    m = module()
    words, out = np.arange(1, 5, dtype=np.uint64), np.empty(4, np.uint64)
    m.address_ids(words, out, 1, 2, 48)
    m.address_ids(words, words, 1, 2, 48)  # in place: each address read before its id is written
    assert np.array_equal(words, out)
    shared = np.arange(1, 6, dtype=np.uint64)
    with pytest.raises(ValueError, match="address_ids: out overlaps the addresses"):
        m.address_ids(shared[:4], shared[1:], 1, 2, 48)  # would write ids over addresses not yet read
    assert np.array_equal(shared, np.arange(1, 6, dtype=np.uint64))


if __name__ == "__main__":
    run_cases(sys.argv[1:])

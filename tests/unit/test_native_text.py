"""The compiled journey texts (native/journey_json.c and journey_text.c,
tracer._native) and the Python paths they stand in for (journey_json.py,
render_rows.py) write the same bytes.

Both run on the same JourneyRows: from the kernel's records and from
sighting rows, with hostile names (control characters, quotes, backslashes,
DEL, non-ASCII and astral characters) where interface,
container and drop-reason names go, unknown times and flows, and ids of
every width. The extension is optional (tracer/native.py): when it is not
built these tests fail rather than skip, since scripts/setup.sh builds it
and CI runs setup first; TRACER_NATIVE=0 turns it off on purpose."""

from __future__ import annotations

import json
import mmap
import os
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest

from tests.unit.test_decode import CT_NS, HOST_NS, ctx
from tests.unit.test_journey_records import records
from tracer import native
from tracer.decode import decode
from tracer.expand import expand
from tracer.hold import sort_records
from tracer.journey_json import journey_json_block, journey_json_lines, journey_json_text
from tracer.journey_records import journey_rows_of_records
from tracer.journey_rows import journey_rows
from tracer.native_json import native_json_block
from tracer.native_render import native_text_block
from tracer.render_rows import render_rows
from tracer.places import Place

HOSTILE = ["eth\n0\t\"x\"\\", "c\x00\x01\x1f\x7f", "caf\u00e9-\u4e2d", "emoji-\U0001F600", "sp ace/\u0085nel", "\u2028\u2029"]


def module():
    m = native.native()
    assert m is not None, f"tracer._native is not built: {native.why_not()}"
    return m


def hostile_ctx(boot_offset_ns: int):
    c = ctx()
    c.boot_offset_ns = boot_offset_ns
    c.drop_reasons = {12: "NETFILTER\x07DROP\u00ff"}
    c.book.places[(HOST_NS, 7)] = Place(HOSTILE[0], "external", HOST_NS)
    c.book.places[(HOST_NS, 9)] = Place(HOSTILE[2], "veth", HOST_NS, "id-\x1b[31m", HOSTILE[1])
    c.book.container_places[2] = [(Place(HOSTILE[3], "container", CT_NS, "id-a\"", HOSTILE[4]), ("172.17.0.2",)),
                                  (Place("eth0", "container", CT_NS + 1, "id-b", HOSTILE[5]), ("172.17.0.3",))]
    return c


def python_block(jr) -> bytes:
    block, count = journey_json_block(jr, compiled=False)
    assert count == len(jr)
    return bytes(block)


def both_ways(c):
    recs = sort_records(records())
    return journey_rows_of_records(recs, c), journey_rows(decode(expand(recs), c))


@pytest.mark.parametrize("boot_offset_ns", [1_000, 1_796_000_000_123_456_789, 0])
def test_compiled_json_is_the_python_json_byte_for_byte(boot_offset_ns):
    m = module()
    for jr in both_ways(hostile_ctx(boot_offset_ns)):
        expected = python_block(jr)
        assert native_json_block(jr, m) == expected
        assert bytes(journey_json_block(jr)[0]) == expected  # the path trace takes picks the compiled one
        lines = expected.decode().splitlines()
        assert len(lines) == len(jr) == 7
        parsed = [json.loads(line) for line in lines]
        names = {h["ifname"] for j in parsed for h in j["hops"]} | {h["container"] for j in parsed for h in j["hops"]}
        assert {HOSTILE[0], HOSTILE[2], HOSTILE[3], HOSTILE[4]} <= names  # the hostile names made it, escaped
        assert all(ord(ch) < 128 for ch in expected.decode()), "json.dumps' ASCII escapes"


def test_unknown_times_flows_and_ids_of_every_width():
    m = module()
    jr, _ = both_ways(hostile_ctx(1_796_000_000_000_000_000))
    jr.wall_ns[::2] = 0  # unknown wall clock: "time": null
    jr.wall_ns[1] = 1_796_000_000_999_999_999  # the last nanosecond of a second
    jr.flow_id[:] = [0, 1, 0xF, 0x10, 0xFFFFFFFF, 1 << 63, 0xFFFFFFFFFFFFFFFF]
    jr.packet_id[:] = [1, 0xABCDEF, 1 << 32, 0x123456789ABCDEF0, 0xFFFFFFFFFFFFFFFF, 0, 42]
    jr.dt[3] = -5  # a hop before the first (clock skew between CPUs): printed as it is
    expected = python_block(jr)
    assert native_json_block(jr, m) == expected
    first = json.loads(expected.decode().splitlines()[0])
    assert first["time"] is None and first["flow_id"] is None and first["packet_id"] == "1"


def test_head_and_empty_batches():
    m = module()
    jr, _ = both_ways(hostile_ctx(1_000))
    assert native_json_block(jr.head(3), m) == python_block(jr.head(3))
    assert journey_json_lines(jr.head(3)) == python_block(jr.head(3)).decode().splitlines()
    block, count = journey_json_block(jr.head(0))
    assert count == 0 and bytes(block) == b""


def _newlines(block: bytes) -> list[int]:
    return [i for i, b in enumerate(block) if b == 0x0A]


@pytest.mark.parametrize("compiled", [True, False])
def test_the_text_into_a_kept_buffer_and_its_line_ends(compiled):
    """`trace --json` writes every batch into one bytearray it keeps
    (journey_json_text's ``into``): batches bigger and smaller than the one
    before give the same bytes as a new block each, the view is only the
    batch's text (never an earlier, longer batch's tail), and the line ends
    are the newlines' offsets, from both paths."""
    jr, _ = both_ways(hostile_ctx(1_796_000_000_123_456_789))
    into = bytearray()
    for k in (2, 7, 1, 5, 7, 3):
        expected = python_block(jr.head(k))
        block, count, ends = journey_json_text(jr.head(k), compiled, into)
        assert count == k and bytes(block) == expected
        assert ends.tolist() == _newlines(expected)
        if compiled:
            assert len(into) >= len(expected) and block.obj is into  # written in place, not a copy
        del block
    grown = len(into)
    journey_json_text(jr.head(2), compiled, into)
    assert len(into) == grown  # never shrunk: its pages stay for the next batch
    block, count, ends = journey_json_text(jr.head(0), compiled, into)
    assert count == 0 and bytes(block) == b"" and len(ends) == 0


class _Stage:
    """The direct output's stage as journey_json_text sees it
    (tracer/direct_output.py: buffer, at, ensure)."""

    def __init__(self, size: int, at: int) -> None:
        self.buffer, self.at, self.grown = mmap.mmap(-1, size), at, 0
        self.buffer[:at] = b"t" * at  # the last write's partial block, kept ahead of the text

    def ensure(self, size: int) -> None:
        if size > len(self.buffer):
            bigger = mmap.mmap(-1, size)
            bigger[:self.at] = self.buffer[:self.at]
            self.buffer.close()
            self.buffer = bigger
            self.grown += 1


def test_the_text_into_a_stage_from_an_offset():
    """`trace --json > FILE` with direct output: the text goes into the
    stage's mmap right after the bytes it holds (never over them), the
    stage is grown by the caller when the compiled loop says it is too
    small, and the bytes and line ends are the Python path's."""
    jr, _ = both_ways(hostile_ctx(1_796_000_000_123_456_789))
    expected = python_block(jr)
    m = module()
    small = mmap.mmap(-1, 4096)
    need = native_json_block(jr, m, small, None, 100)
    assert need < 0 and -need > 100 + len(expected)  # minus what it needs: 100 + the text's bound
    stage = _Stage(4096, 100)
    block, count, ends = journey_json_text(jr, True, stage)
    assert stage.grown == 1 and count == len(jr) and bytes(block) == expected
    assert ends.tolist() == _newlines(expected)
    assert bytes(stage.buffer[:100]) == b"t" * 100 and bytes(stage.buffer[100:100 + len(expected)]) == expected
    del block
    with pytest.raises(ValueError, match="at is negative"):
        native_json_block(jr, m, stage.buffer, None, -1)
    with pytest.raises(ValueError, match="with a bytearray"):
        native_json_block(jr, m, bytearray(), None, 5)


def test_the_compiled_line_ends_and_buffer_are_checked():
    m = module()
    jr, _ = both_ways(hostile_ctx(1_000))
    with pytest.raises(ValueError, match="ends has 3 slots for 7 journeys"):
        native_json_block(jr, m, None, np.empty(3, np.int64))
    with pytest.raises(TypeError, match="64-bit"):
        native_json_block(jr, m, None, np.empty(7, np.float64))
    with pytest.raises(ValueError):  # read-only: the C writes it
        native_json_block(jr, m, None, _read_only(7))
    with pytest.raises(TypeError, match="bytearray"):
        native_json_block(jr, m, b"", None)
    into = bytearray(1)
    held = memoryview(into)  # a view still held: the buffer cannot grow under it
    with pytest.raises(BufferError):
        native_json_block(jr, m, into, None)
    held.release()
    size = native_json_block(jr, m, into, None)
    assert bytes(into[:size]) == python_block(jr)


def _read_only(n: int) -> np.ndarray:
    a = np.empty(n, np.int64)
    a.setflags(write=False)
    return a


def test_bad_arguments_are_errors_not_crashes():
    m = module()
    jr, _ = both_ways(hostile_ctx(1_000))
    jr.hook.codes[0] = len(jr.hook.values)  # a code past its table
    with pytest.raises(ValueError, match="hook code"):
        native_json_block(jr, m)
    with pytest.raises(ValueError, match="hook code"):  # checked as the text is written: into a stage too
        native_json_block(jr, m, into=mmap.mmap(-1, 1 << 22), at=0)


@pytest.mark.parametrize("where", ["first", "last"])
def test_every_code_column_out_of_range_is_named(where):
    """journey_json checks each code as it writes its text: a code past its
    table or negative, in any code column, at the first journey or hop or
    the last, is a ValueError naming the column."""
    m = module()
    for column, codes in (("direction", lambda jr: jr.direction), ("verdict", lambda jr: jr.verdict),
                          ("reason", lambda jr: jr.reason), ("hook", lambda jr: jr.hook.codes),
                          ("stage", lambda jr: jr.stage.codes), ("ifname", lambda jr: jr.ifname.codes),
                          ("container", lambda jr: jr.container.codes),
                          ("container_id", lambda jr: jr.container_id.codes)):
        for past in (True, False):
            jr, _ = both_ways(hostile_ctx(1_000))
            array = codes(jr)
            bad = min(1 << 40, int(np.iinfo(array.dtype).max)) if past else -1  # direction and verdict: int8
            array[0 if where == "first" else -1] = bad
            with pytest.raises(ValueError, match=rf"\b{column} code {bad} out of range"):
                native_json_block(jr, m)
    with pytest.raises(TypeError):
        m.journey_json((np.zeros(3, np.float64),) * 10, (), ())
    with pytest.raises(TypeError, match="64-bit"):
        m.journey_json((np.zeros(3, np.float64),) * 10, (np.zeros(0, np.int64),) * 14, ([],) * 12)


def test_turned_off_it_says_why_and_the_python_path_writes():
    code = ("from tracer import native; from tracer.journey_json import journey_json_block; "
            "print(native.native() is None, native.why_not())")
    env = {**os.environ, "TRACER_NATIVE": "0"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    assert out.strip() == "True turned off by TRACER_NATIVE=0"


def test_turned_off_the_python_path_writes_the_same_json(monkeypatch):
    jr, _ = both_ways(hostile_ctx(1_000))
    compiled = bytes(journey_json_block(jr)[0])
    monkeypatch.setenv("TRACER_NATIVE", "0")
    monkeypatch.setattr(native, "_loaded", False)
    monkeypatch.setattr(native, "_module", None)
    monkeypatch.setattr(native, "_why_not", "")  # restored after: a later failure says its own reason
    assert native.native() is None
    block, count = journey_json_block(jr)
    assert count == len(jr) and bytes(block) == compiled == python_block(jr)


def test_a_build_older_than_its_sources_is_not_used(tmp_path):
    (tmp_path / "a.c").write_text("int a;\n")
    built = types.SimpleNamespace(SOURCES=native.sources_hash(tmp_path))
    assert not native.stale(built, tmp_path)
    (tmp_path / "a.c").write_text("int a, b;\n")  # a pull changed the sources
    assert native.stale(built, tmp_path)
    assert native.stale(types.SimpleNamespace(), tmp_path), "a build without SOURCES predates the check"
    assert not native.stale(built, tmp_path / "absent"), "an installed package has no sources to compare"


def test_this_build_is_of_these_sources():
    """setup.py bakes its hash of native/ into the build; native.py must
    compute the same one (else every build would count as stale)."""
    directory = Path(native.__file__).resolve().parent.parent / "native"
    assert module().SOURCES == native.sources_hash(directory), "built from other sources: run scripts/setup.sh"


# --- the human text (native/journey_text.c, tracer/render_rows.py) ---------------


def python_text(jr, color: bool) -> bytes:
    return bytes(render_rows(jr, color, compiled=False))


@pytest.mark.parametrize("color", [False, True])
@pytest.mark.parametrize("boot_offset_ns", [1_000, 1_796_000_000_123_456_789])
def test_compiled_text_is_the_python_text_byte_for_byte(color, boot_offset_ns):
    m = module()
    for jr in both_ways(hostile_ctx(boot_offset_ns)):
        expected = python_text(jr, color)
        assert native_text_block(jr, color, m) == expected
        assert bytes(render_rows(jr, color)) == expected  # the path trace takes picks the compiled one
        text = expected.decode()
        assert "DNAT" in text and "NETFILTER\\x07DROP" in text and "(last seen" in text
        for raw in ("\x00", "\x07", "\x7f", "eth\n0"):
            assert raw not in text, "names escaped for the terminal"


def test_text_times_widths_and_unknowns():
    m = module()
    jr, _ = both_ways(hostile_ctx(1_796_000_000_000_000_000))
    # dt in every unit, rounding up, down and exactly half-way (format_dt's
    # own float rounding), negative (a drop stamped on another CPU's clock)
    jr.dt[:] = np.resize(np.array([0, 49, 50, 150, 250, 999_949, 999_950, 999_999, 1_000_000, 1_005_000, 1_234_567,
                                   999_995_000, 1_000_000_000, 12_345_678_901, -50, -1_234_567], np.int64), len(jr.dt))
    jr.wall_ns[::3] = 0
    jr.wall_ns[1] = -1  # before the epoch: the day's last microsecond
    jr.flow_id[:] = [0, 1, 0xF, 0x10, 0xFFFFFFFF, 1 << 63, 0xFFFFFFFFFFFFFFFF]
    jr.packet_id[:] = [1, 0xABCDEF, 1 << 32, 0x123456789ABCDEF0, 0xFFFFFFFFFFFFFFFF, 0, 42]
    for color in (False, True):
        assert native_text_block(jr, color, m) == python_text(jr, color)
    assert native_text_block(jr.head(2), False, m) == python_text(jr.head(2), False)
    assert bytes(render_rows(jr.head(0), False)) == b""


def test_text_bad_arguments_are_errors_not_crashes():
    m = module()
    jr, _ = both_ways(hostile_ctx(1_000))
    jr.last_seen[0] = len(jr.dt) + 5  # a hop outside its journey
    with pytest.raises(ValueError, match="last_seen"):
        native_text_block(jr, False, m)
    jr, _ = both_ways(hostile_ctx(1_000))
    jr.stage.codes[1] = 99
    with pytest.raises(ValueError, match="stage"):
        native_text_block(jr, False, m)
    with pytest.raises(TypeError):
        m.journey_text((), (), (), (), 1, None)


@pytest.mark.parametrize("color", [False, True])
def test_the_human_text_into_a_stage_from_an_offset(color):
    """`trace > FILE` with direct output: the human text goes into the
    stage right after the bytes it holds (never over them), grown by the
    caller when the compiled loop says it is too small; the bytes are the
    Python path's, and a stage big enough is not grown."""
    jr, _ = both_ways(hostile_ctx(1_796_000_000_123_456_789))
    expected = python_text(jr, color)
    m = module()
    need = native_text_block(jr, color, m, mmap.mmap(-1, 4096), 100)
    assert need < 0 and -need > 100 + len(expected)  # minus what it needs: 100 + the text's bound
    stage = _Stage(4096, 100)
    block = render_rows(jr, color, into=stage)
    assert stage.grown == 1 and bytes(block) == expected
    assert bytes(stage.buffer[:100]) == b"t" * 100 and bytes(stage.buffer[100:100 + len(expected)]) == expected
    del block
    stage.at = 100 + len(expected)  # the next pass follows the text this one left
    again = render_rows(jr.head(2), color, into=stage)
    assert stage.grown == 1 and bytes(again) == python_text(jr.head(2), color)
    assert bytes(stage.buffer[100:100 + len(expected)]) == expected
    del again
    with pytest.raises(ValueError, match="at is negative"):
        native_text_block(jr, color, m, stage.buffer, -1)
    with pytest.raises(ValueError, match="without into"):
        native_text_block(jr, color, m, None, 5)
    with pytest.raises(TypeError, match="writable buffer"):
        native_text_block(jr, color, m, b"read-only", 0)


def test_doctor_says_whether_it_is_built():
    cap = native.capability()
    assert cap.ok and cap.status == "ok" and not cap.required and "tracer._native" in cap.detail
    code = "from tracer import native; c = native.capability(); print(c.status, c.required, '|', c.detail, '|', c.fix)"
    out = subprocess.run([sys.executable, "-c", code], env={**os.environ, "TRACER_NATIVE": "0"}, capture_output=True,
                         text=True, check=True).stdout
    assert out.strip() == "missing False | turned off by TRACER_NATIVE=0 | bash scripts/setup.sh (builds it with gcc and python3-dev)"


def test_a_build_from_older_sources_is_not_used():
    """A pull without re-running setup.sh leaves a module without the newest
    functions: detected by name, reported, and the Python paths used."""
    assert native.missing_functions(module()) == []

    class Stale:
        journey_json = journey_text = None

    assert native.missing_functions(Stale()) == [f for f in native.FUNCTIONS if f not in ("journey_json", "journey_text")]


def test_every_function_in_the_module_table_is_listed():
    """native/module.c's table and tracer/native.py's FUNCTIONS name the same
    functions: one added to the C without the list would not be checked."""
    import re
    from pathlib import Path

    table = (Path(__file__).resolve().parents[2] / "native" / "module.c").read_text()
    assert set(re.findall(r'\{"(\w+)",\s*native_', table)) == set(native.FUNCTIONS)


def test_a_held_view_of_the_kept_buffer_is_refused_whatever_the_batch_size():
    """A smaller batch would rewrite the bytes under a view still held from
    the last one (a bigger one could not grow the buffer): both refused at
    entry, the held view's bytes untouched."""
    m = module()
    jr, _ = both_ways(hostile_ctx(1_000))
    into = bytearray()
    size = native_json_block(jr.head(5), m, into, None)
    held = memoryview(into)[:size]
    before = bytes(held)
    for k in (2, 7):
        with pytest.raises(BufferError, match="a view of into is still held"):
            native_json_block(jr.head(k), m, into, None)
        assert bytes(held) == before
    held.release()
    size = native_json_block(jr.head(2), m, into, None)
    assert bytes(into[:size]) == python_block(jr.head(2))


def _json_output():
    import io

    from tracer.live_output import JourneyOutput
    from tracer.sinks import Batch

    out = JourneyOutput(as_json=True, color=False, out=io.StringIO())
    return out, lambda rows: out.on_batch(Batch(journeys=rows))


def test_trace_json_lets_a_bursts_buffer_go_after_quiet_passes():
    """`trace --json` keeps its buffer while batches only vary, and lets a
    burst's go after QUIET_PASSES passes in a row (idle ones too) under a
    quarter of the text it grew for: one burst does not set the run's
    memory for hours. The text shown is the same either way."""
    from tracer.allocator import QUIET_PASSES

    jr, _ = both_ways(hostile_ctx(1_796_000_000_123_456_789))
    burst, small = jr, jr.head(1)
    assert len(python_block(small)) * 4 < len(python_block(burst))
    out, show = _json_output()
    show(burst)
    grown = len(out.json_buffer.into)
    assert grown > 0
    for _ in range(3 * QUIET_PASSES):  # steady, varying batches: kept, never regrown
        show(jr.head(len(jr) - 1))
        show(burst)
    assert len(out.json_buffer.into) == grown
    for i in range(QUIET_PASSES - 1):
        show(small) if i % 2 else show(jr.head(0))
    assert len(out.json_buffer.into) == grown
    show(small)
    assert len(out.json_buffer.into) < grown  # let go: the next batch sizes a buffer for itself
    show(burst)
    expected = python_block(burst)
    assert out.reader.stream.getvalue().encode().endswith(expected)

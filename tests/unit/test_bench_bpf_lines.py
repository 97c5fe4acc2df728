"""scripts/bench_bpf_lines.py's pure parts: the BTF string section, a
program's address-to-line map, perf script's samples and where each is put
(its live run needs root, the lab and perf: docs/benchmarks.md, session 27)."""

from __future__ import annotations

import struct

import pytest

from tests.unit.script_modules import load_script

lines = load_script("bench_bpf_lines")


def _btf(strings: bytes, types: bytes = b"\0" * 12) -> bytes:
    """A BTF blob: 24-byte header, the types, then the strings."""
    return struct.pack("=HBBIIIII", 0xEB9F, 1, 0, 24, 0, len(types), len(types), len(strings)) + types + strings


def test_btf_strings_is_the_string_section_after_the_types() -> None:
    strings = b"\0int x = 1;\0return x;\0"
    assert lines.btf_strings(_btf(strings)) == strings
    assert lines.string_at(strings, 1) == "int x = 1;"
    assert lines.string_at(strings, 12) == "return x;"


def test_btf_strings_refuses_what_is_not_btf() -> None:
    with pytest.raises(ValueError, match="not BTF"):
        lines.btf_strings(b"\0" * 32)


def _program() -> object:
    strings = b"\0int f(ctx) {\0u64 a = b;\0return a;\0"
    # line_info records (insn_off, file_name_off, line_off, line_col: line << 10 | column), their JITed
    # addresses out of order as a test of the sort
    records = [(0, 0, 1, 10 << 10), (8, 0, 25, 12 << 10 | 5), (4, 0, 14, 11 << 10)]
    jited = [0x1000, 0x1040, 0x1010]
    return lines.program_lines("trc_x", jited, records, strings, 0x80)


def test_an_address_falls_in_the_line_whose_code_starts_at_or_before_it() -> None:
    prog = _program()
    assert [ln.number for ln in prog.lines] == [10, 11, 12]
    assert prog.line_at(0x1000).text == "int f(ctx) {"
    assert prog.line_at(0x100F).number == 10
    assert prog.line_at(0x1010).text == "u64 a = b;"
    assert prog.line_at(0x107F).text == "return a;"
    assert prog.line_at(0x1080) is None and prog.line_at(0xFFF) is None  # outside the program


def test_perf_script_blocks_are_samples_leaf_first() -> None:
    text = ("\n    ffffffffc0001010 bpf_prog_abc_trc_x\n    ffffffff81000000 nf_hook_slow\n\n"
            "    ffffffff81234567 read_tsc\n    ffffffff81234000 ktime_get_mono_fast_ns\n"
            "    ffffffffc0001044 bpf_prog_abc_trc_x\n\n    7f00 [unknown]\n\n")
    samples = lines.parse_perf_script(text)
    assert samples[0] == [(0xFFFFFFFFC0001010, "bpf_prog_abc_trc_x"), (0xFFFFFFFF81000000, "nf_hook_slow")]
    assert samples[1][0] == (0xFFFFFFFF81234567, "read_tsc") and len(samples[1]) == 3
    assert samples[2] == [(0x7F00, "[unknown]")]


def test_samples_go_to_a_line_or_to_what_the_program_called() -> None:
    prog = _program()
    # leaf in the program; helper called from the program; not in any program
    samples = [[(prog.start + 0x12, "bpf_prog_trc_x")],
               [(0x1000_0000, "read_tsc"), (0x10, "ktime_get_mono_fast_ns"), (prog.start + 0x44, "bpf_prog_trc_x")],
               [(0x10, "tcp_ack"), (0x20, "ip_rcv")]]
    own, called, total = lines.attribute(samples, [prog])
    assert own == {("trc_x", 11, "u64 a = b;"): 1}
    assert called == {("trc_x", "read_tsc"): 1}
    assert total == 3

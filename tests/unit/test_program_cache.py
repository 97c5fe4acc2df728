"""The program cache's pure parts (tracer/kernel/program_cache.py): finding
the map loads to patch, the on-disk entry and its checks, the directory's
safety rule and eviction. Loading from it for real: tests/e2e/test_program_cache.py."""

from __future__ import annotations

import ctypes
import os
import struct

import pytest

from tracer.kernel import program_cache as pc
from tracer.kernel.map_table import ctype_of, ctype_of_json


def _ld_map(fd: int, dst: int = 1) -> bytes:
    """ld_imm64 dst, map fd (two slots)."""
    return struct.pack("<BBhi", 0x18, dst | (pc.BPF_PSEUDO_MAP_FD << 4), 0, fd) + bytes(8)


def _ld_imm64(value: int) -> bytes:
    return struct.pack("<BBhi", 0x18, 1, 0, value) + bytes(8)


EXIT = struct.pack("<BBhi", 0x95, 0, 0, 0)
MOV_R0_0 = struct.pack("<BBhi", 0xB7, 0, 0, 0)


def _compiled() -> pc.Compiled:
    insns = MOV_R0_0 + _ld_map(7) + _ld_imm64(7) + _ld_map(9, dst=2) + EXIT
    maps = (pc.MapSpec("events", 27, 0, 0, 4096, 0, "", '"int"'),
            pc.MapSpec("flows", 9, 40, 16, 65536, 0, '["k", [["a", "unsigned long long"]], "struct"]', '"unsigned int"'))
    return pc.Compiled(b"GPL", 393664, maps, (pc.ProgramSpec("trc_x", insns, pc.relocations(insns, {7: 0, 9: 1})),))


def test_relocations_are_the_map_fd_loads_only():
    insns = MOV_R0_0 + _ld_map(7) + _ld_imm64(7) + _ld_map(9, dst=2) + EXIT
    # slot 1: map 7; slot 3: a plain 64-bit constant that happens to equal 7; slot 5: map 9
    assert pc.relocations(insns, {7: 0, 9: 1}) == ((1, 0), (5, 1))


def test_a_module_needing_other_relocations_is_not_cached():
    with pytest.raises(pc.NotCacheable, match="pseudo source 2"):
        pc.relocations(struct.pack("<BBhi", 0x18, 1 | (2 << 4), 0, 7) + bytes(8), {7: 0})
    with pytest.raises(pc.NotCacheable, match="not one of the module's tables"):
        pc.relocations(_ld_map(11), {7: 0})
    with pytest.raises(pc.NotCacheable):
        pc.relocations(EXIT[:5], {})


def test_an_entry_reads_back_as_written():
    compiled = _compiled()
    assert pc.decode(pc.encode(compiled, "k1"), "k1") == compiled


@pytest.mark.parametrize("spoil", [
    lambda data: data[:-10],  # cut short
    lambda data: data.replace(b"trc_x", b"trc_y"),  # changed without a new checksum
    lambda data: b"",
    lambda data: b"\n" + data,
    lambda data: bytes(len(data)),
])
def test_a_damaged_entry_is_refused(spoil):
    with pytest.raises(pc.CorruptEntry):
        pc.decode(spoil(pc.encode(_compiled(), "k1")), "k1")


def test_an_entry_for_another_key_is_refused():
    with pytest.raises(pc.CorruptEntry, match="key"):
        pc.decode(pc.encode(_compiled(), "k1"), "k2")


def test_a_relocation_that_is_not_a_map_load_is_refused_even_with_a_good_checksum():
    good = _compiled()
    prog = good.programs[0]
    for relocs in (((0, 0),), ((1, 5),), ((99, 0),), ((3, 0),)):  # a mov; no map 5; past the end; a plain ld_imm64
        bad = pc.Compiled(good.license, good.kern_version, good.maps, (pc.ProgramSpec(prog.name, prog.insns, relocs),))
        with pytest.raises(pc.CorruptEntry, match="relocation"):
            pc.decode(pc.encode(bad, "k"), "k")


def test_the_key_changes_with_everything_the_build_depends_on():
    base = ("src", ["-DA=1"], "0.26.0", "/usr/src/h", "6.18 #1 x86_64 abcd")
    keys = {pc.cache_key(*base)}
    for i, other in enumerate(("src2", ["-DA=2"], "0.27.0", "/usr/src/h2", "6.18 #2 x86_64 abcd")):
        changed = list(base)
        changed[i] = other
        keys.add(pc.cache_key(*changed))
    assert len(keys) == 6
    assert pc.cache_key(*base) == pc.cache_key(*base)


def test_store_and_load_in_a_private_directory(tmp_path):
    cache = pc.ProgramCache(tmp_path / "programs")
    assert cache.load("k1") is None
    cache.store("k1", _compiled())
    assert cache.load("k1") == _compiled()
    assert os.stat(tmp_path / "programs").st_mode & 0o777 == 0o700
    assert os.stat(tmp_path / "programs" / "k1.prog").st_mode & 0o777 == 0o600
    assert not list((tmp_path / "programs").glob(".prog-*")), "no temporary file left"


def test_a_corrupt_file_is_a_miss_and_is_removed(tmp_path, caplog):
    cache = pc.ProgramCache(tmp_path)
    os.chmod(tmp_path, 0o700)
    cache.store("k1", _compiled())
    path = tmp_path / "k1.prog"
    path.write_bytes(path.read_bytes()[:-1] + b"X")
    assert cache.load("k1") is None
    assert not path.exists()
    assert "unusable" in caplog.text


def test_a_directory_others_may_write_is_not_used(tmp_path, caplog):
    cache = pc.ProgramCache(tmp_path)
    os.chmod(tmp_path, 0o700)
    cache.store("k1", _compiled())
    os.chmod(tmp_path, 0o777)
    try:
        assert cache.load("k1") is None
        assert "not using the program cache" in caplog.text
        cache.store("k2", _compiled())
        assert not (tmp_path / "k2.prog").exists()
    finally:
        os.chmod(tmp_path, 0o700)


def test_a_symbolic_link_to_a_private_directory_is_not_used(tmp_path, caplog):
    real = tmp_path / "real"
    real.mkdir(mode=0o700)
    pc.ProgramCache(real).store("k1", _compiled())
    (tmp_path / "programs").symlink_to(real)
    cache = pc.ProgramCache(tmp_path / "programs")
    assert cache.unsafe() == "it is a symbolic link"
    assert cache.load("k1") is None
    assert "not using the program cache" in caplog.text


@pytest.mark.parametrize("spoil", ["symlink", "group-writable"])
def test_an_entry_that_is_not_a_private_file_is_refused(tmp_path, caplog, spoil):
    cache = pc.ProgramCache(tmp_path)
    os.chmod(tmp_path, 0o700)
    cache.store("k1", _compiled())
    entry = tmp_path / "k1.prog"
    if spoil == "symlink":  # a link to a good entry elsewhere is still not read
        cache.store("k2", _compiled())
        entry.unlink()
        entry.symlink_to(tmp_path / "k2.prog")
    else:
        os.chmod(entry, 0o620)
    assert cache.load("k1") is None
    assert "unusable" in caplog.text
    assert not os.path.lexists(entry), "the refused entry is removed"


def test_a_killed_writers_temporary_file_is_removed_later(tmp_path):
    cache = pc.ProgramCache(tmp_path)
    os.chmod(tmp_path, 0o700)
    old, fresh = tmp_path / ".prog-old.tmp", tmp_path / ".prog-new.tmp"
    old.write_bytes(b"half")
    fresh.write_bytes(b"half")
    os.utime(old, (0, 0))
    cache.store("k1", _compiled())
    assert not old.exists() and fresh.exists(), "only a writer's file older than a minute goes"


def test_an_entry_that_cannot_be_removed_is_only_a_miss(tmp_path, monkeypatch):
    cache = pc.ProgramCache(tmp_path)
    os.chmod(tmp_path, 0o700)

    def refuse(self, missing_ok=False):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(pc.Path, "unlink", refuse)
    cache.discard("k1")  # no exception


def test_only_the_most_recently_used_entries_are_kept(tmp_path):
    cache = pc.ProgramCache(tmp_path, max_entries=3)
    os.chmod(tmp_path, 0o700)
    for i in range(3):
        cache.store(f"k{i}", _compiled())
        os.utime(tmp_path / f"k{i}.prog", ns=(i * 10**9, i * 10**9))
    assert cache.load("k0") is not None  # used now: the newest
    cache.store("k3", _compiled())
    assert sorted(p.stem for p in tmp_path.glob("*.prog")) == ["k0", "k2", "k3"]


def test_caching_is_off_on_request_and_while_debugging(monkeypatch, tmp_path):
    monkeypatch.delenv("TRACER_DEBUG", raising=False)
    monkeypatch.delenv("TRACER_PROGRAM_CACHE", raising=False)
    assert pc.enabled()
    monkeypatch.setenv("TRACER_PROGRAM_CACHE", "0")
    assert not pc.enabled()
    monkeypatch.delenv("TRACER_PROGRAM_CACHE")
    monkeypatch.setenv("TRACER_DEBUG", "1")
    assert not pc.enabled()
    monkeypatch.setenv("TRACER_PROGRAM_CACHE_DIR", str(tmp_path))
    assert pc.default_dir() == tmp_path


def test_map_types_decode_as_bcc_describes_them():
    key = ctype_of_json('["backend_key", [["addr", ["trc_addr", [["hi", "unsigned long long"], '
                        '["lo", "unsigned long long"]], "struct"]], ["port", "unsigned short"], '
                        '["__pad_0", "char", [6]]], "struct"]')
    assert ctypes.sizeof(key) == 24
    k = key()
    k.addr.hi, k.port = 5, 80
    assert (k.addr.hi, k.port) == (5, 80)
    assert ctype_of("unsigned int") is ctypes.c_uint
    union = ctype_of(["u", [["a", "int"], ["b", "long long"]], "union"])
    assert ctypes.sizeof(union) == 8
    with pytest.raises(ValueError):
        ctype_of("struct nonsense")


def test_doctor_describes_the_cache(tmp_path, monkeypatch):
    monkeypatch.delenv("TRACER_DEBUG", raising=False)
    monkeypatch.delenv("TRACER_PROGRAM_CACHE", raising=False)
    cache = pc.ProgramCache(tmp_path / "programs")
    ok, detail = cache.describe()
    assert ok and "empty" in detail
    cache.store("k1", _compiled())
    ok, detail = cache.describe()
    assert ok and "1 compiled build" in detail and "private" in detail
    os.chmod(tmp_path / "programs", 0o770)
    ok, detail = cache.describe()
    assert not ok and "not used" in detail
    os.chmod(tmp_path / "programs", 0o700)
    monkeypatch.setenv("TRACER_PROGRAM_CACHE", "0")
    ok, detail = cache.describe()
    assert not ok and "every start compiles" in detail


def test_a_cache_path_that_is_not_a_directory_is_only_a_missed_speed_up(tmp_path):
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("x")
    cache = pc.ProgramCache(not_a_dir)
    cache.store("k1", _compiled())  # no exception: nothing written
    assert cache.load("k1") is None
    assert not_a_dir.read_text() == "x"
    ok, detail = cache.describe()
    assert not ok and "not used" in detail


def test_a_header_tree_rebuilt_in_place_is_a_new_build(tmp_path):
    from tracer.kernel.program import _header_tree_identity

    (tmp_path / "include/generated").mkdir(parents=True)
    autoconf = tmp_path / "include/generated/autoconf.h"
    autoconf.write_text("#define CONFIG_A 1\n")
    before = _header_tree_identity(tmp_path)
    assert before == _header_tree_identity(tmp_path)
    autoconf.write_text("#define CONFIG_A 1\n#define CONFIG_B 1\n")
    assert _header_tree_identity(tmp_path) != before


@pytest.mark.parametrize("insns, relocs", [
    # a map load with no relocation: it would keep BCC's old fd number
    (MOV_R0_0 + _ld_map(7) + _ld_map(9, dst=2) + EXIT, ((1, 0),)),
    # another pseudo source (map value) beside the listed map load
    (MOV_R0_0 + _ld_map(7) + struct.pack("<BBhi", 0x18, 1 | (2 << 4), 0, 7) + bytes(8) + EXIT, ((1, 0),)),
    # the same map load listed twice
    (MOV_R0_0 + _ld_map(7) + EXIT, ((1, 0), (1, 1))),
])
def test_every_special_load_must_be_a_listed_map_load_even_with_a_good_checksum(insns, relocs):
    good = _compiled()
    bad = pc.Compiled(good.license, good.kern_version, good.maps, (pc.ProgramSpec("trc_x", insns, relocs),))
    with pytest.raises(pc.CorruptEntry, match="relocation"):
        pc.decode(pc.encode(bad, "k"), "k")


def test_the_keys_bcc_version_is_read_without_importing_bcc():
    """A warm start needs BCC only for its version in the key: read from
    its package (import bcc is ~45 ms), the same value bcc.__version__ has."""
    import subprocess
    import sys

    script = ("import sys; from tracer.kernel.program_cache import bcc_version; v = bcc_version(); "
              "assert 'bcc' not in sys.modules, 'imported'; import bcc; assert v == bcc.__version__, (v, bcc.__version__)")
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr

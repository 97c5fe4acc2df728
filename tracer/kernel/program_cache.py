"""The compiled programs kept on disk, so a start with the same program skips
clang (about 1.5 s of a 2.4 s start here).

After BCC compiles a module, ``snapshot`` keeps each program's instructions
and where they load a map's fd (``ld_imm64`` with ``BPF_PSEUDO_MAP_FD``), and
each map's kernel attributes (from the kernel's own view of BCC's maps) and
BCC's description of its key and value types. A later run with the same key
(the source, the clang flags, BCC's version, the header tree and the
kernel's BTF) creates the maps itself, writes their fds into the
instructions and loads them (tracer/kernel/cached_module.py). A body that
serves several programs (bpf/common.h trc_param: tc's four hooks, netfilter's
two NAT stages) keeps where it loads PARAM_MARKER, and each program is the
body with its own value written there (``patch``). The filter's port,
protocol and sample rate are left open the same way (FILTER_VALUE_MARKERS):
one entry serves `--port 8000` and `--port 3000` alike, each start writing
its own values in.

The cache is a directory only root may write, never through a symbolic
link (programs from it run in the kernel): one file per key, ``<key>.prog``, its first line the SHA-256
of the rest. A file that does not check out is removed and the program
compiled again; so is one whose programs the kernel refuses (the caller
discards it). At most MAX_ENTRIES files are kept, the least recently used
removed first.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import stat
import struct
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

log = logging.getLogger(__name__)

FORMAT = 4  # bump when the entry's shape or meaning changes (2: parameter slots; 3: filter value slots; 4: FILTER_ON)
MAX_ENTRIES = 32  # ~130 KB each; a test suite's many option sets fit
SUFFIX = ".prog"
TMP_SUFFIX = ".tmp"
LD_IMM64 = 0x18  # BPF_LD | BPF_IMM | BPF_DW: two instruction slots
BPF_PSEUDO_MAP_FD = 1
# The 64-bit constant bpf/common.h trc_param loads ("TRC_PAR1"): each of its
# loads is a slot the loader writes the program's value into.
PARAM_MARKER = 0x5452435F50415231
# The 64-bit constants bpf/common.h's TRC_FILTER_ON, TRC_FILTER_PORT,
# TRC_FILTER_PROTO and TRC_SAMPLE_N load: slots the loader writes the
# filter's values into (the same in every program of a start:
# tracer/kernel/kernel_filter.py Filter.values).
FILTER_VALUE_MARKERS = {"on": 0x5452435F464F4E53, "port": 0x5452435F46505254, "proto": 0x5452435F4650524F,
                        "sample": 0x5452435F46534D50}
_VALUE_OF_MARKER = {marker: name for name, marker in FILTER_VALUE_MARKERS.items()}


class CorruptEntry(ValueError):
    """A cache file that is not a whole, consistent entry."""


class NotCacheable(ValueError):
    """A module this cache cannot reproduce (map BTF, other relocations)."""


@dataclass(frozen=True)
class MapSpec:
    name: str
    type: int
    key_size: int
    value_size: int
    max_entries: int
    flags: int
    key_desc: str  # BCC's JSON description of the key type ('' when it has none)
    leaf_desc: str


@dataclass(frozen=True)
class ProgramSpec:
    name: str
    insns: bytes
    relocs: tuple[tuple[int, int], ...]  # (instruction index, index into maps) whose imm is the map's fd
    params: tuple[int, ...] = ()  # instruction indexes of PARAM_MARKER loads (trc_param)
    values: tuple[tuple[int, str], ...] = ()  # (instruction index, filter value name) of FILTER_VALUE_MARKERS loads


@dataclass(frozen=True)
class Compiled:
    license: bytes
    kern_version: int
    maps: tuple[MapSpec, ...]
    programs: tuple[ProgramSpec, ...]

    def program(self, name: str) -> ProgramSpec | None:
        return next((p for p in self.programs if p.name == name), None)


def bcc_version() -> str:
    """bcc.__version__, read from the package's version.py without importing
    it: ``import bcc`` loads libbcc and its Python, ~45 ms of a warm start,
    which needs nothing else of BCC (a cold start's compile imports it)."""
    import importlib.util  # noqa: PLC0415
    import re  # noqa: PLC0415

    spec = importlib.util.find_spec("bcc")
    for where in (spec.submodule_search_locations or []) if spec else []:
        try:
            text = Path(where, "version.py").read_text()
        except OSError:
            continue
        found = re.search(r"""^__version__\s*=\s*['"]([^'"]+)['"]""", text, re.M)
        if found:
            return found.group(1)
    import bcc  # noqa: PLC0415 - a layout without version.py: ask the package

    return bcc.__version__


def cache_key(source: str, cflags: list[str], bcc_version: str, headers: str, kernel: str) -> str:
    """What the compiled programs depend on, hashed: any change compiles again."""
    h = hashlib.sha256()
    for part in (f"tracer-program-cache-{FORMAT}", source, "\0".join(cflags), bcc_version, headers, kernel):
        h.update(part.encode())
        h.update(b"\0\1")
    return h.hexdigest()[:32]


# -- taking a compiled BCC module apart -----------------------------------------


def _imm64(insns: bytes, at: int) -> int:
    """The 64-bit constant of the ld_imm64 at byte ``at`` (two slots' imm)."""
    lo, hi = struct.unpack_from("<I", insns, at + 4)[0], struct.unpack_from("<I", insns, at + 12)[0]
    return hi << 32 | lo


def _plain_loads(insns: bytes):
    """(instruction index, constant) of each plain ld_imm64 (no pseudo
    source: not a map load), whole (both slots) within ``insns``."""
    for i in range(0, len(insns) - 15, 8):
        if insns[i] == LD_IMM64 and insns[i + 1] >> 4 == 0:
            yield i // 8, _imm64(insns, i)


def param_slots(insns: bytes) -> tuple[int, ...]:
    """Instruction indexes of the plain ld_imm64 loads of PARAM_MARKER."""
    return tuple(index for index, imm in _plain_loads(insns) if imm == PARAM_MARKER)


def value_slots(insns: bytes) -> tuple[tuple[int, str], ...]:
    """(instruction index, value name) of the plain ld_imm64 loads of a
    FILTER_VALUE_MARKERS constant."""
    return tuple((index, _VALUE_OF_MARKER[imm]) for index, imm in _plain_loads(insns) if imm in _VALUE_OF_MARKER)


def patch(spec: ProgramSpec, map_fds: list[int], value: int | None, values: Mapping[str, int] | None = None) -> bytes:
    """The program's instructions with the maps' fds (in the entry's map
    order) in its map loads, ``value`` in its parameter slots and the
    filter's ``values`` (name -> value) in its value slots. A body with
    slots needs a value and one without takes none: either mistake would
    load a program that sees a hook it is not attached to. A value slot
    without its value is refused too (the program would match the marker);
    values a program has no slot for are other programs'."""
    if spec.params and value is None:
        raise ValueError(f"{spec.name} is a shared body: it needs the value of one of its programs")
    if value is not None and not spec.params:
        raise ValueError(f"{spec.name} has no parameter slot for the value {value}")
    values = values or {}
    insns = bytearray(spec.insns)
    for index, map_index in spec.relocs:
        struct.pack_into("<i", insns, index * 8 + 4, map_fds[map_index])
    for index in spec.params:
        _write_imm64(insns, index, value, "parameter")
    for index, name in spec.values:
        if name not in values:
            raise ValueError(f"{spec.name} needs the filter's {name}, which this start has none of")
        _write_imm64(insns, index, values[name], f"filter {name}")
    return bytes(insns)


def _write_imm64(insns: bytearray, index: int, value: int, what: str) -> None:
    if not 0 <= value < 1 << 64:
        raise ValueError(f"{what} {value} does not fit 64 bits")
    struct.pack_into("<I", insns, index * 8 + 4, value & 0xFFFFFFFF)
    struct.pack_into("<I", insns, index * 8 + 12, value >> 32)


def relocations(insns: bytes, map_of_fd: dict[int, int]) -> tuple[tuple[int, int], ...]:
    """(instruction index, map index) of each map-fd load; anything else
    needing relocation (map values, other pseudo sources) is NotCacheable."""
    if len(insns) % 8:
        raise NotCacheable("instructions are not 8-byte aligned")
    out = []
    for i in range(0, len(insns), 8):
        if insns[i] != LD_IMM64:
            continue
        src = insns[i + 1] >> 4
        if src == 0:
            continue
        if src != BPF_PSEUDO_MAP_FD:
            raise NotCacheable(f"ld_imm64 with pseudo source {src}")
        fd = struct.unpack_from("<i", insns, i + 4)[0]
        if fd not in map_of_fd:
            raise NotCacheable(f"a map fd {fd} that is not one of the module's tables")
        out.append((i // 8, map_of_fd[fd]))
    return tuple(out)


def snapshot(bpf) -> Compiled:
    """A compiled bcc.BPF as a Compiled; NotCacheable if it cannot be
    reproduced from one."""
    import ctypes

    from bcc import lib  # noqa: PLC0415 - only after a BCC compile

    from tracer.kernel.bpf_syscall import map_info_by_fd

    lib.bpf_num_tables.restype, lib.bpf_num_tables.argtypes = ctypes.c_ulonglong, [ctypes.c_void_p]
    lib.bpf_table_name.restype, lib.bpf_table_name.argtypes = ctypes.c_char_p, [ctypes.c_void_p, ctypes.c_ulonglong]
    lib.bpf_table_fd_id.restype, lib.bpf_table_fd_id.argtypes = ctypes.c_int, [ctypes.c_void_p, ctypes.c_ulonglong]
    module = bpf.module
    maps, map_of_fd = [], {}
    for i in range(lib.bpf_num_tables(module)):
        name = lib.bpf_table_name(module, i)
        fd = lib.bpf_table_fd_id(module, i)
        info = map_info_by_fd(fd)
        if info.btf_id:
            raise NotCacheable(f"map {name.decode()} has BTF")
        map_of_fd[fd] = len(maps)
        maps.append(MapSpec(name.decode(), info.type, info.key_size, info.value_size, info.max_entries, info.flags,
                            (lib.bpf_table_key_desc(module, name) or b"").decode(),
                            (lib.bpf_table_leaf_desc(module, name) or b"").decode()))
    programs = []
    for i in range(lib.bpf_num_functions(module)):
        name = lib.bpf_function_name(module, i)
        insns = ctypes.string_at(lib.bpf_function_start(module, name), lib.bpf_function_size(module, name))
        programs.append(ProgramSpec(name.decode(), insns, relocations(insns, map_of_fd), param_slots(insns),
                                    value_slots(insns)))
    return Compiled(lib.bpf_module_license(module), int(lib.bpf_module_kern_version(module)), tuple(maps),
                    tuple(programs))


def unloaded_snapshot(bpf) -> Compiled:
    """``snapshot(bpf)``, then BCC's module unloaded (its maps and LLVM's
    memory: a loader makes its own from the snapshot); any failure is
    NotCacheable (a refused map info, another libbcc's ctypes)."""
    try:
        return snapshot(bpf)
    except NotCacheable:
        raise
    except Exception as exc:  # noqa: BLE001 - whatever a libbcc this was not written for raises
        raise NotCacheable(str(exc)) from None
    finally:
        bpf.cleanup()


# -- on disk ---------------------------------------------------------------------


def encode(compiled: Compiled, key: str) -> bytes:
    body = json.dumps({
        "format": FORMAT, "key": key, "license": compiled.license.decode(), "kern_version": compiled.kern_version,
        "maps": [vars(m) for m in compiled.maps],
        "programs": [{"name": p.name, "insns": base64.b64encode(p.insns).decode(), "relocs": p.relocs,
                      "params": p.params, "values": p.values} for p in compiled.programs],
    }, separators=(",", ":")).encode()
    return hashlib.sha256(body).hexdigest().encode() + b"\n" + body


def decode(data: bytes, key: str) -> Compiled:
    """The entry in ``data``, checked whole; CorruptEntry says what is wrong."""
    digest, _, body = data.partition(b"\n")
    if hashlib.sha256(body).hexdigest().encode() != digest:
        raise CorruptEntry("checksum does not match")
    try:
        raw = json.loads(body)
        if raw["format"] != FORMAT or raw["key"] != key:
            raise CorruptEntry("another format or key")
        maps = tuple(MapSpec(**m) for m in raw["maps"])
        programs = tuple(ProgramSpec(p["name"], base64.b64decode(p["insns"], validate=True),
                                     tuple((int(i), int(m)) for i, m in p["relocs"]),
                                     tuple(int(i) for i in p["params"]),
                                     tuple((int(i), str(n)) for i, n in p["values"])) for p in raw["programs"])
        compiled = Compiled(raw["license"].encode(), int(raw["kern_version"]), maps, programs)
    except CorruptEntry:
        raise
    except (ValueError, KeyError, TypeError) as exc:
        raise CorruptEntry(f"malformed: {exc}") from None
    _check(compiled)
    return compiled


def _check(compiled: Compiled) -> None:
    """The relocations are exactly the program's special ld_imm64 loads,
    each a map-fd load of a map that exists, and the parameter slots exactly
    its loads of PARAM_MARKER."""
    for p in compiled.programs:
        if not p.insns or len(p.insns) % 8:
            raise CorruptEntry(f"{p.name}: instructions are not whole")
        for index, map_index in p.relocs:
            at = index * 8
            if not (0 <= map_index < len(compiled.maps)) or not (0 <= at < len(p.insns) - 8) \
                    or p.insns[at] != LD_IMM64 or p.insns[at + 1] >> 4 != BPF_PSEUDO_MAP_FD:
                raise CorruptEntry(f"{p.name}: relocation {index} is not a map load")
        # Both ways, as for the slots: a map load without a relocation would
        # keep BCC's old fd number (some other fd of this process), and
        # another pseudo source is what snapshot refuses to cache.
        special = {i // 8: p.insns[i + 1] >> 4 for i in range(0, len(p.insns), 8)
                   if p.insns[i] == LD_IMM64 and p.insns[i + 1] >> 4 != 0}
        if any(src != BPF_PSEUDO_MAP_FD for src in special.values()) \
                or set(special) != {i for i, _ in p.relocs} or len(p.relocs) != len(special):
            raise CorruptEntry(f"{p.name}: relocations are not the program's map loads")
        if p.params != param_slots(p.insns):
            raise CorruptEntry(f"{p.name}: parameter slots are not the marker's loads")
        if p.values != value_slots(p.insns):
            raise CorruptEntry(f"{p.name}: filter value slots are not the markers' loads")


def default_dir() -> Path:
    """TRACER_PROGRAM_CACHE_DIR, else programs/ under the tracer's cache
    (TRACER_CACHE, /var/cache/tracer)."""
    where = os.environ.get("TRACER_PROGRAM_CACHE_DIR")
    return Path(where) if where else Path(os.environ.get("TRACER_CACHE", "/var/cache/tracer")) / "programs"


def switched_on() -> bool:
    """Whether the environment leaves the cache on: TRACER_PROGRAM_CACHE=0
    switches it off (every start compiles, as before the cache)."""
    return os.environ.get("TRACER_PROGRAM_CACHE", "1") != "0"


def enabled() -> bool:
    """Switched on and no TRACER_DEBUG, which compiles every time too (it
    keeps BCC's debug info, which the cache does not reproduce)."""
    return switched_on() and not os.environ.get("TRACER_DEBUG")


class ProgramCache:
    def __init__(self, directory: Path | None = None, max_entries: int = MAX_ENTRIES) -> None:
        self.directory = directory or default_dir()
        self.max_entries = max_entries

    def _path(self, key: str) -> Path:
        return self.directory / f"{key}{SUFFIX}"

    def unsafe(self) -> str | None:
        """Why the directory may not be used, or None: only a directory of
        ours that nobody else may write, and not a symbolic link (which
        could lead elsewhere), since what is in it runs in the kernel."""
        try:
            fd = os.open(self.directory, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
        except OSError as exc:
            return "it is a symbolic link" if os.path.islink(self.directory) else (exc.strerror or str(exc))
        try:
            return _not_private(os.fstat(fd), "directory")
        finally:
            os.close(fd)

    def _safe(self) -> bool:
        why = self.unsafe()
        if why is not None and os.path.lexists(self.directory):
            log.warning("not using the program cache %s: %s", self.directory, why)
        return why is None

    def describe(self) -> tuple[bool, str]:
        """(usable, what it holds), for `tracer doctor`."""
        if not enabled():
            return False, "off (TRACER_PROGRAM_CACHE=0 or TRACER_DEBUG): every start compiles"
        if not os.path.lexists(self.directory):
            return True, f"{self.directory}: empty (the first trace fills it)"
        why = self.unsafe()
        if why is not None:
            return False, f"{self.directory} not used ({why}): every start compiles"
        entries = list(self.directory.glob(f"*{SUFFIX}"))
        size = sum(p.stat().st_size for p in entries)
        return True, f"{self.directory}: {len(entries)} compiled build(s), {size // 1024} KiB, private"

    def load(self, key: str) -> Compiled | None:
        """The entry for ``key``, or None (absent, unsafe, or corrupt: then removed)."""
        path = self._path(key)
        if not os.path.lexists(path) or not self._safe():
            return None
        try:
            compiled = decode(_read_private(path), key)
        except (OSError, CorruptEntry) as exc:
            log.warning("program cache entry %s unusable (%s): compiling again", path.name, exc)
            self.discard(key)
            return None
        try:
            os.utime(path)  # recently used: evicted last
        except OSError:
            pass
        return compiled

    def store(self, key: str, compiled: Compiled) -> None:
        """Write atomically; a cache we cannot write is only a missed speed-up."""
        try:
            self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            if not self._safe():
                return
            fd, tmp = tempfile.mkstemp(dir=self.directory, prefix=".prog-", suffix=TMP_SUFFIX)
        except OSError as exc:
            log.debug("program cache not written: %s", exc)
            return
        try:
            with os.fdopen(fd, "wb") as out:  # mkstemp: mode 0600
                out.write(encode(compiled, key))
            os.replace(tmp, self._path(key))
        except OSError as exc:
            Path(tmp).unlink(missing_ok=True)
            log.debug("program cache not written: %s", exc)
            return
        self._evict()

    def discard(self, key: str) -> None:
        """Remove an entry; one we cannot remove is left (a miss, not an error)."""
        try:
            self._path(key).unlink(missing_ok=True)
        except OSError as exc:
            log.debug("program cache entry not removed: %s", exc)

    def _evict(self) -> None:
        """Keep the newest max_entries; remove what a killed writer left
        (temporary files older than a minute: a live writer's is younger)."""
        try:
            entries = sorted(self.directory.glob(f"*{SUFFIX}"), key=lambda p: p.stat().st_mtime_ns, reverse=True)
            for old in entries[self.max_entries:]:
                old.unlink(missing_ok=True)
            now = time.time()
            for tmp in self.directory.glob(f".prog-*{TMP_SUFFIX}"):
                if now - tmp.lstat().st_mtime > 60:
                    tmp.unlink(missing_ok=True)
        except OSError:
            pass


def _not_private(st: os.stat_result, what: str) -> str | None:
    """Why a file of the cache is not private to us, or None."""
    if what == "directory" and not stat.S_ISDIR(st.st_mode) or what == "file" and not stat.S_ISREG(st.st_mode):
        return f"it is not a {what}"
    if st.st_uid != os.geteuid() or st.st_mode & 0o022:
        return f"it must belong to uid {os.geteuid()} and be writable by it alone"
    return None


def _read_private(path: Path) -> bytes:
    """An entry's bytes, only if it is a regular file of ours nobody else may
    write (never through a symbolic link)."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    with os.fdopen(fd, "rb") as entry:
        why = _not_private(os.fstat(entry.fileno()), "file")
        if why is not None:
            raise CorruptEntry(why)
        return entry.read()

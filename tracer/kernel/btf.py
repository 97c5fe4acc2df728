"""Kernel struct layouts read straight from BTF.

BTF (https://docs.kernel.org/bpf/btf.html) is the kernel's own description of
its types, so offsets taken from it are right for the running build, whatever
headers BCC happened to compile against. This is a small reader of the binary
format: one pass over the type section records where each type starts and
indexes named structs/unions/enums/typedefs; members are decoded only for the
types a caller asks about. ``resolve_offsets`` is the batch entry point used at
program load; it keeps its answers in an on-disk cache keyed by the BTF
contents, so the parse is paid once per kernel build.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import struct
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Mapping

from tracer.errors import MissingCapability

VMLINUX_BTF = Path("/sys/kernel/btf/vmlinux")

BTF_MAGIC = 0xEB9F
HEADER_LEN = 24

# Kinds, from include/uapi/linux/btf.h.
INT, PTR, ARRAY, STRUCT, UNION, ENUM, FWD, TYPEDEF = 1, 2, 3, 4, 5, 6, 7, 8
VOLATILE, CONST, RESTRICT, FUNC, FUNC_PROTO, VAR, DATASEC = 9, 10, 11, 12, 13, 14, 15
FLOAT, DECL_TAG, TYPE_TAG, ENUM64 = 16, 17, 18, 19

# Bytes that follow the 12-byte btf_type: (fixed, per vlen entry).
_TRAILER: dict[int, tuple[int, int]] = {
    INT: (4, 0), PTR: (0, 0), ARRAY: (12, 0), STRUCT: (0, 12), UNION: (0, 12),
    ENUM: (0, 8), FWD: (0, 0), TYPEDEF: (0, 0), VOLATILE: (0, 0), CONST: (0, 0),
    RESTRICT: (0, 0), FUNC: (0, 0), FUNC_PROTO: (0, 8), VAR: (4, 0),
    DATASEC: (0, 12), FLOAT: (0, 0), DECL_TAG: (4, 0), TYPE_TAG: (0, 0),
    ENUM64: (0, 12),
}
_MODIFIERS = frozenset({TYPEDEF, VOLATILE, CONST, RESTRICT, TYPE_TAG})
_QUALIFIER_WORD = {VOLATILE: "volatile", CONST: "const", RESTRICT: "restrict"}
_INDEXED = frozenset({STRUCT, UNION, ENUM, ENUM64, TYPEDEF})
_MAX_DEPTH = 64  # longest modifier/array chain we follow; guards against loops
_PATH_PART = re.compile(r"([A-Za-z_]\w*)((?:\[\d+\])*)$")


class BitfieldOffsetError(MissingCapability):
    """offsetof() on a bitfield: it has no byte offset; use member()."""


@dataclass(frozen=True)
class Member:
    """A struct member located from the start of the outermost struct.

    For a bitfield, ``offset``/``size`` are the bytes that hold its bits
    (read ``size`` bytes at ``offset``, shift right by ``bit_offset % 8``
    on little endian, mask ``bit_size`` bits).
    """

    name: str
    offset: int
    size: int
    bitfield: bool
    bit_offset: int
    bit_size: int
    type_name: str


@dataclass(frozen=True)
class _Type:
    kind: int
    name: str
    kind_flag: bool
    vlen: int
    size_or_type: int
    pos: int  # where the trailer (members, array info, ...) starts


class Btf:
    """One parsed BTF blob (vmlinux or a test's own)."""

    def __init__(self, data: bytes) -> None:
        self._data = memoryview(bytes(data))
        self._endian = self._read_header()
        self._offsets: list[int] = [0]  # type id -> byte position; id 0 is void
        self._by_name: dict[str, list[int]] = {}
        self._cache: dict[int, _Type] = {}
        self._scan_types()

    @classmethod
    def from_bytes(cls, data: bytes) -> Btf:
        return cls(data)

    @classmethod
    def from_file(cls, path: str | os.PathLike[str] = VMLINUX_BTF) -> Btf:
        return cls(_read_btf_file(Path(path)))

    # -- parsing -----------------------------------------------------------

    def _read_header(self) -> str:
        data = self._data
        if len(data) < HEADER_LEN:
            raise _malformed(f"{len(data)} bytes is shorter than the header")
        endian = "<" if struct.unpack_from("<H", data)[0] == BTF_MAGIC else ">"
        magic, version, _flags, hdr_len, type_off, type_len, str_off, str_len = (
            struct.unpack_from(endian + "HBBIIIII", data)
        )
        if magic != BTF_MAGIC or version != 1:
            raise _malformed(f"bad magic {magic:#x} or version {version}")
        if hdr_len < HEADER_LEN or hdr_len > len(data):
            raise _malformed(f"header length {hdr_len}")
        for off, length, what in ((type_off, type_len, "type"), (str_off, str_len, "string")):
            if hdr_len + off + length > len(data):
                raise _malformed(f"{what} section runs past the end of the data")
        self._types = (hdr_len + type_off, hdr_len + type_off + type_len)
        self._strings = bytes(data[hdr_len + str_off : hdr_len + str_off + str_len])
        return endian

    def _scan_types(self) -> None:
        """One cheap pass: where each type starts, and an index of named ones."""
        unpack = struct.Struct(self._endian + "III").unpack_from
        data, offsets, trailer = self._data, self._offsets, _TRAILER
        pos, end = self._types
        named: list[tuple[int, int]] = []  # (name_off, type id), decoded after the loop
        while pos < end:
            if pos + 12 > end:
                raise _malformed(f"type {len(offsets)} truncated")
            name_off, info, _ = unpack(data, pos)
            kind = (info >> 24) & 0x1F
            fixed_per = trailer.get(kind)
            if fixed_per is None:
                raise _malformed(f"type {len(offsets)} has unknown kind {kind}")
            if name_off and kind in _INDEXED:
                named.append((name_off, len(offsets)))
            offsets.append(pos)
            pos += 12 + fixed_per[0] + fixed_per[1] * (info & 0xFFFF)
        if pos != end:
            raise _malformed("last type runs past the type section")
        for name_off, type_id in named:
            self._by_name.setdefault(self._str(name_off), []).append(type_id)

    def _str(self, off: int) -> str:
        strings = self._strings
        if off >= len(strings):
            raise _malformed(f"string offset {off} out of range")
        end = strings.find(b"\0", off)
        if end < 0:
            raise _malformed(f"string at {off} is not terminated")
        return strings[off:end].decode("utf-8", "replace")

    def _type(self, type_id: int) -> _Type:
        cached = self._cache.get(type_id)
        if cached is not None:
            return cached
        if not 0 < type_id < len(self._offsets):
            raise _malformed(f"type id {type_id} out of range")
        pos = self._offsets[type_id]
        name_off, info, size_or_type = struct.unpack_from(self._endian + "III", self._data, pos)
        t = _Type(
            kind=(info >> 24) & 0x1F,
            name=self._str(name_off) if name_off else "",
            kind_flag=bool(info >> 31),
            vlen=info & 0xFFFF,
            size_or_type=size_or_type,
            pos=pos + 12,
        )
        self._cache[type_id] = t
        return t

    def _u32s(self, pos: int, count: int) -> tuple[int, ...]:
        return struct.unpack_from(f"{self._endian}{count}I", self._data, pos)

    def _raw_members(self, t: _Type) -> Iterator[tuple[str, int, int, int]]:
        """(name, type id, bit offset, bitfield size or 0) of a struct/union."""
        for i in range(t.vlen):
            name_off, type_id, offset = self._u32s(t.pos + 12 * i, 3)
            name = self._str(name_off) if name_off else ""
            if t.kind_flag:
                yield name, type_id, offset & 0xFFFFFF, offset >> 24
            else:
                yield name, type_id, offset, 0

    # -- type helpers ------------------------------------------------------

    def _peel(self, type_id: int) -> int:
        """Follow typedef/const/volatile/restrict/type_tag to the real type."""
        for _ in range(_MAX_DEPTH):
            if type_id == 0 or self._type(type_id).kind not in _MODIFIERS:
                return type_id
            type_id = self._type(type_id).size_or_type
        raise _malformed(f"modifier chain too long at type {type_id}")

    def _sizeof_id(self, type_id: int, depth: int = 0) -> int:
        if depth > _MAX_DEPTH:
            raise _malformed(f"type chain too long at type {type_id}")
        type_id = self._peel(type_id)
        if type_id == 0:
            raise MissingCapability("BTF: void has no size")
        t = self._type(type_id)
        if t.kind in (INT, STRUCT, UNION, ENUM, ENUM64, FLOAT, DATASEC):
            return t.size_or_type
        if t.kind == PTR:
            return self._pointer_size()
        if t.kind == ARRAY:
            elem, _index, nelems = self._u32s(t.pos, 3)
            return nelems * self._sizeof_id(elem, depth + 1)
        raise MissingCapability(f"BTF: type {t.name or type_id} has no size")

    def _pointer_size(self) -> int:
        # BTF does not state it; an unsigned long is pointer-sized in the kernel.
        for type_id in self._by_name.get("long unsigned int", []):
            return self._type(type_id).size_or_type
        return 8

    def _type_name(self, type_id: int, depth: int = 0) -> str:
        """C-like spelling of a type, e.g. 'struct net_device *' or '__u8[16]'."""
        if type_id == 0:
            return "void"
        if depth > _MAX_DEPTH:
            return "..."
        t = self._type(type_id)
        inner = t.size_or_type
        if t.kind in (STRUCT, UNION, ENUM, ENUM64, FWD):
            word = {STRUCT: "struct", UNION: "union", FWD: "struct"}.get(t.kind, "enum")
            if t.kind == FWD and t.kind_flag:
                word = "union"
            return f"{word} {t.name or '(anon)'}"
        if t.kind == PTR:
            return self._type_name(inner, depth + 1).rstrip() + " *"
        if t.kind == ARRAY:
            elem, _index, nelems = self._u32s(t.pos, 3)
            return f"{self._type_name(elem, depth + 1)}[{nelems}]"
        if t.kind in _QUALIFIER_WORD:
            return f"{_QUALIFIER_WORD[t.kind]} {self._type_name(inner, depth + 1)}"
        if t.kind == TYPE_TAG:
            return self._type_name(inner, depth + 1)
        if t.kind == FUNC_PROTO:
            return "function"
        return t.name or f"<kind {t.kind}>"

    # -- lookups -----------------------------------------------------------

    def __contains__(self, name: object) -> bool:
        """Whether a struct, union, enum or typedef of this name exists."""
        return name in self._by_name

    def _find(self, name: str, kinds: frozenset[int] | set[int]) -> int | None:
        """Type id of the named type of one of ``kinds``, preferring full definitions."""
        candidates = [i for i in self._by_name.get(name, []) if self._type(i).kind in kinds]
        candidates.sort(key=lambda i: self._type(i).vlen == 0)  # stable: defined first
        return candidates[0] if candidates else None

    def _composite(self, name: str) -> int:
        """Struct/union by name, or a typedef naming one (e.g. possible_net_t)."""
        type_id = self._find(name, {STRUCT, UNION})
        if type_id is None:
            typedef = self._find(name, {TYPEDEF})
            if typedef is not None:
                type_id = self._peel(typedef)
        if not type_id or self._type(type_id).kind not in (STRUCT, UNION):
            raise MissingCapability(f"kernel BTF has no struct {name}")
        return type_id

    def _lookup(self, comp_id: int, name: str, depth: int = 0) -> tuple[int, int, int] | None:
        """(type id, bit offset, bitfield size) of ``name`` in a struct/union,
        looking inside anonymous members the way C does."""
        if depth > _MAX_DEPTH:
            raise _malformed(f"anonymous members nest too deep at type {comp_id}")
        t = self._type(comp_id)
        for member, type_id, bit_off, bits in self._raw_members(t):
            if member == name:
                if not bits and not t.kind_flag:
                    bit_off, bits = self._legacy_bitfield(type_id, bit_off)
                return type_id, bit_off, bits
            if member == "":
                inner = self._peel(type_id)
                if inner and self._type(inner).kind in (STRUCT, UNION):
                    found = self._lookup(inner, name, depth + 1)
                    if found is not None:
                        return found[0], bit_off + found[1], found[2]
        return None

    def _legacy_bitfield(self, type_id: int, bit_off: int) -> tuple[int, int]:
        """kind_flag=0 encoding: a bitfield is an INT whose encoding narrows its bits."""
        real = self._peel(type_id)
        t = self._type(real) if real else None
        if t is None or t.kind != INT:
            return bit_off, 0
        (encoding,) = self._u32s(t.pos, 1)
        int_off, nr_bits = (encoding >> 16) & 0xFF, encoding & 0xFF
        if int_off == 0 and nr_bits == 8 * t.size_or_type:
            return bit_off, 0
        return bit_off + int_off, nr_bits

    def member(self, struct_name: str, path: str) -> Member:
        """Locate ``path`` (e.g. 'tuplehash[1].tuple.dst.u3') in ``struct_name``."""
        type_id = self._composite(struct_name)
        bit_off, bits, leaf = 0, 0, ""
        for part_no, part in enumerate(path.split(".")):
            match = _PATH_PART.match(part)
            if match is None:
                raise MissingCapability(f"bad member path {struct_name}.{path}")
            leaf, indices = match.group(1), match.group(2)
            comp = self._peel(type_id)
            if part_no and (not comp or self._type(comp).kind not in (STRUCT, UNION)):
                where = ".".join(path.split(".")[:part_no])
                raise MissingCapability(
                    f"{struct_name}.{where} is a {self._type_name(type_id)}, not a struct"
                )
            found = self._lookup(comp, leaf)
            if found is None:
                raise MissingCapability(f"kernel BTF: struct {struct_name} has no member {path}")
            type_id, off, bits = found
            bit_off += off
            for index in re.findall(r"\[(\d+)\]", indices):
                type_id, bit_off = self._index(type_id, int(index), bit_off, struct_name, path)
        return self._make_member(leaf, type_id, bit_off, bits)

    def _index(
        self, type_id: int, index: int, bit_off: int, struct_name: str, path: str
    ) -> tuple[int, int]:
        """Step into element ``index`` of an array member."""
        arr = self._peel(type_id)
        t = self._type(arr) if arr else None
        if t is None or t.kind != ARRAY:
            raise MissingCapability(f"{struct_name}.{path}: indexing a non-array")
        elem, _index_type, nelems = self._u32s(t.pos, 3)
        if nelems and index >= nelems:  # nelems 0 is a flexible array
            raise MissingCapability(f"{struct_name}.{path}: index {index} >= {nelems}")
        return elem, bit_off + index * 8 * self._sizeof_id(elem)

    def _make_member(self, name: str, type_id: int, bit_off: int, bits: int) -> Member:
        type_name = self._type_name(type_id)
        if bits or bit_off % 8:
            bits = bits or 8 * self._sizeof_id(type_id)
            first, span = bit_off // 8, (bit_off % 8 + bits + 7) // 8
            return Member(name, first, span, True, bit_off, bits, type_name)
        size = self._sizeof_id(type_id) if self._peel(type_id) else 0
        return Member(name, bit_off // 8, size, False, bit_off, 8 * size, type_name)

    def offsetof(self, struct_name: str, path: str) -> int:
        m = self.member(struct_name, path)
        if m.bitfield:
            raise BitfieldOffsetError(
                f"{struct_name}.{path} is a bitfield (bits {m.bit_offset}+{m.bit_size}); use member()"
            )
        return m.offset

    def sizeof(self, name: str) -> int:
        """Size of a struct, union, enum or typedef by name."""
        type_id = self._find(name, {STRUCT, UNION}) or self._find(name, {TYPEDEF, ENUM, ENUM64})
        if type_id is None:
            raise MissingCapability(f"kernel BTF has no type {name}")
        return self._sizeof_id(type_id)

    def enum_values(self, name: str) -> dict[str, int]:
        type_id = self._find(name, {ENUM, ENUM64})
        if type_id is None:
            typedef = self._find(name, {TYPEDEF})
            type_id = self._peel(typedef) if typedef else None
        t = self._type(type_id) if type_id else None
        if t is None or t.kind not in (ENUM, ENUM64):
            raise MissingCapability(f"kernel BTF has no enum {name}")
        return dict(self._enumerators(t))

    def _enumerators(self, t: _Type) -> Iterator[tuple[str, int]]:
        if t.kind == ENUM:
            for i in range(t.vlen):
                name_off, value = self._u32s(t.pos + 8 * i, 2)
                if t.kind_flag and value >= 1 << 31:  # kind_flag: signed values
                    value -= 1 << 32
                yield self._str(name_off), value
        else:
            for i in range(t.vlen):
                name_off, lo, hi = self._u32s(t.pos + 12 * i, 3)
                value = hi << 32 | lo
                if t.kind_flag and value >= 1 << 63:
                    value -= 1 << 64
                yield self._str(name_off), value


def _malformed(why: str) -> MissingCapability:
    return MissingCapability(f"malformed BTF: {why}")


def _read_btf_file(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise MissingCapability(
            f"kernel BTF not found at {path} (CONFIG_DEBUG_INFO_BTF=y needed)"
        ) from None
    except OSError as exc:
        raise MissingCapability(f"cannot read kernel BTF at {path}: {exc.strerror}") from None


_parsed: dict[str, Btf] = {}  # by cache key, so kernel_btf and resolve_offsets share a parse
_kernel: dict[Path, Btf] = {}


def _cache_key(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:16]


# Per process: a file's content key by its identity and stamp, so a run's
# several lookups (offsets, enum values, tracepoint types) read and hash the
# 5 MB of vmlinux BTF once (~15 ms each time). A rewritten file (a test's)
# has a new size or mtime and is read again.
_file_keys: dict[tuple, str] = {}


def _file_key(path: Path) -> tuple[str, bytes | None]:
    """(content key, the bytes if they were read for it, else None)."""
    try:
        st = path.stat()
        stamp = (str(path), st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
    except OSError:
        stamp = None  # _read_btf_file says why
    if stamp is not None and stamp in _file_keys:
        return _file_keys[stamp], None
    data = _read_btf_file(path)
    key = _cache_key(data)
    if stamp is not None:
        _file_keys[stamp] = key
    return key, data


def kernel_btf_key(path: str | os.PathLike[str] = VMLINUX_BTF) -> str:
    """The running kernel's BTF, as a short content hash (read once per
    process): what a cache of anything built for this kernel is keyed by."""
    return _file_key(Path(path))[0]


def _parse_once(data: bytes, key: str) -> Btf:
    if key not in _parsed:
        _parsed[key] = Btf.from_bytes(data)
    return _parsed[key]


def kernel_btf(path: str | os.PathLike[str] = VMLINUX_BTF) -> Btf:
    """The running kernel's BTF, parsed once per process."""
    where = Path(path)
    if where not in _kernel:
        data = _read_btf_file(where)
        _kernel[where] = _parse_once(data, _cache_key(data))
    return _kernel[where]


# -- resolve_offsets and its on-disk cache -------------------------------------


def _cache_file(key: str) -> Path:
    root = Path(os.environ.get("TRACER_CACHE", "/var/cache/tracer"))
    return root / "btf" / f"{key}.json"


def _load_cache(path: Path) -> dict[str, int]:
    try:
        loaded = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    offsets = loaded.get("offsets") if isinstance(loaded, dict) else None
    if not isinstance(offsets, dict):
        return {}
    return {k: v for k, v in offsets.items() if isinstance(v, int)}


def _store_cache(path: Path, offsets: dict[str, int]) -> None:
    """Write atomically; a cache we cannot write is only a missed speed-up."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".btf-", suffix=".tmp")
    except OSError:
        return
    try:
        os.fchmod(fd, 0o644)  # offsets are no secret; let unprivileged tools read them
        with os.fdopen(fd, "w") as out:
            json.dump({"offsets": offsets}, out, sort_keys=True, indent=0)
        os.replace(tmp, path)
    except OSError:
        Path(tmp).unlink(missing_ok=True)


def resolve_offsets(
    wanted: Mapping[str, tuple[str, str] | tuple[str, str, int]],
    btf_path: str | os.PathLike[str] = VMLINUX_BTF,
) -> dict[str, int]:
    """Byte offsets for ``{"OFF_SKB_HEAD": ("sk_buff", "head"), ...}``.

    An entry may name the bytes the BPF C reads there, ``("sk_buff", "head",
    8)``: the member must then be a plain field at least that wide, not a
    bitfield. Answers come from the per-kernel-build cache when it has them
    all (an entry is cached only after passing its check); BTF is parsed only
    for a miss. Every missing or unfit member is named in one error.
    """
    return _resolve(
        {name: (":".join(map(str, spec)), lambda btf, spec=spec: _checked_offset(btf, *spec)) for name, spec in wanted.items()},
        btf_path,
    )


def resolve_enum_value(enum_name: str, member: str, default: int,
                       btf_path: str | os.PathLike[str] = VMLINUX_BTF) -> int:
    """A kernel enum constant's value (``default`` if the enum lacks it),
    through the same per-build cache as resolve_offsets."""
    return _resolve(
        {"v": (f"enum:{enum_name}:{member}", lambda btf: btf.enum_values(enum_name).get(member, default))}, btf_path
    )["v"]


def has_type(name: str, btf_path: str | os.PathLike[str] = VMLINUX_BTF) -> bool:
    """Whether the kernel's BTF names a type `name` (a tracepoint NAME has
    the typedef btf_trace_NAME), through the same per-build cache."""
    return bool(_resolve({"v": (f"type:{name}", lambda btf: int(name in btf))}, btf_path)["v"])


def _resolve(wanted: Mapping[str, tuple[str, Callable[[Btf], int]]], btf_path) -> dict[str, int]:
    """name -> (cache key, compute from the parsed BTF): cached answers, BTF
    parsed only for a miss, every failure named in one error."""
    btf_key, data = _file_key(Path(btf_path))
    cache_path = _cache_file(btf_key)
    known = _load_cache(cache_path)
    misses = {key: compute for key, compute in wanted.values() if key not in known}
    if misses:
        btf = _parse_once(data if data is not None else _read_btf_file(Path(btf_path)), btf_key)
        errors: list[str] = []
        for key, compute in misses.items():
            try:
                known[key] = compute(btf)
            except MissingCapability as exc:
                errors.append(str(exc))
        if len(errors) < len(misses):
            _store_cache(cache_path, known)
        if errors:
            raise MissingCapability("; ".join(errors))
    return {name: known[key] for name, (key, _) in wanted.items()}


def _checked_offset(btf: Btf, struct_name: str, path: str, size: int | None = None) -> int:
    if size is None:
        return btf.offsetof(struct_name, path)
    member = btf.member(struct_name, path)
    if member.bitfield or member.size < size:
        raise MissingCapability(
            f"kernel struct {struct_name}.{path} has an unexpected layout "
            f"({member.size} bytes, bitfield={member.bitfield}); this kernel is not supported"
        )
    return member.offset

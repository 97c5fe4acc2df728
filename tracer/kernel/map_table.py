"""Maps read and written through their fds, as BCC's table objects are.

A module loaded from the program cache (tracer/kernel/cached_module.py) has
no BCC module behind it, so its maps are these: the part of BCC's table
interface this project uses (``Key``/``Leaf`` ctypes types, ``map_fd``,
item get/set/delete, ``clear``, ``len``, iteration; per-CPU maps read as
one value per possible CPU), over our own bpf() syscalls.
"""

from __future__ import annotations

import ctypes
import json
from collections.abc import MutableMapping
from functools import lru_cache

from tracer.kernel import bpf_syscall as sc
from tracer.kernel.cpus import possible_cpus

BPF_MAP_TYPE_HASH = 1
BPF_MAP_TYPE_ARRAY = 2
BPF_MAP_TYPE_PERCPU_HASH = 5
BPF_MAP_TYPE_PERCPU_ARRAY = 6
BPF_MAP_TYPE_LRU_PERCPU_HASH = 10
ARRAYS = {BPF_MAP_TYPE_ARRAY, BPF_MAP_TYPE_PERCPU_ARRAY}
PER_CPU = {BPF_MAP_TYPE_PERCPU_HASH, BPF_MAP_TYPE_PERCPU_ARRAY, BPF_MAP_TYPE_LRU_PERCPU_HASH}

# C scalar types as BCC names them in its key/leaf descriptions (bcc.BPF.str2ctype).
_SCALARS = {
    "_Bool": ctypes.c_bool, "char": ctypes.c_char, "wchar_t": ctypes.c_wchar, "unsigned char": ctypes.c_ubyte,
    "short": ctypes.c_short, "unsigned short": ctypes.c_ushort, "int": ctypes.c_int, "unsigned int": ctypes.c_uint,
    "long": ctypes.c_long, "unsigned long": ctypes.c_ulong, "long long": ctypes.c_longlong,
    "unsigned long long": ctypes.c_ulonglong, "float": ctypes.c_float, "double": ctypes.c_double,
    "long double": ctypes.c_longdouble, "__int128": ctypes.c_int64 * 2, "unsigned __int128": ctypes.c_uint64 * 2,
}


def ctype_of(desc):
    """A ctypes type from BCC's JSON description of a key or leaf type
    (bpf_table_key_desc), decoded as bcc.BPF._decode_table_type does."""
    if isinstance(desc, str):
        if desc not in _SCALARS:
            raise ValueError(f"cannot decode map type {desc!r}")
        return _SCALARS[desc]
    anon, fields = [], []
    for member in desc[1]:
        if len(member) == 2:
            fields.append((member[0], ctype_of(member[1])))
        elif len(member) == 3 and isinstance(member[2], list):
            fields.append((member[0], ctype_of(member[1]) * member[2][0]))
        elif len(member) == 3 and isinstance(member[2], int):
            fields.append((member[0], ctype_of(member[1]), member[2]))
        elif len(member) == 3 and member[2] in ("union", "struct", "struct_packed"):
            name = member[0] or f"__anon{len(anon)}"
            if not member[0]:
                anon.append(name)
            fields.append((name, ctype_of(member)))
        else:
            raise ValueError(f"cannot decode map type {member!r}")
    kind = desc[2] if len(desc) > 2 else "struct"
    base = ctypes.Union if kind == "union" else ctypes.Structure
    body = {"_anonymous_": anon, "_fields_": fields}
    if kind == "struct_packed":
        body["_pack_"] = 1
    return type(str(desc[0]), (base,), body)


def ctype_of_json(text: str):
    return ctype_of(json.loads(text))


@lru_cache(maxsize=1)
class MapTable(MutableMapping):
    """One map, by fd (not owned: the module closes it). Key, Leaf, sLeaf and
    get_fd are named as BCC's tables name them: callers use either."""

    def __init__(self, name: str, map_fd: int, map_type: int, max_entries: int, key_type, leaf_type) -> None:
        self.name = name
        self.map_fd = map_fd
        self.map_type = map_type
        self.max_entries = max_entries
        self.Key = key_type
        self.sLeaf = leaf_type
        self.Leaf = _per_cpu_leaf(leaf_type) if map_type in PER_CPU else leaf_type

    def get_fd(self) -> int:
        return self.map_fd

    def __getitem__(self, key):
        leaf = self.Leaf()
        if not sc.map_lookup(self.map_fd, self._key(key), leaf):
            raise KeyError(key)
        return leaf

    def __setitem__(self, key, leaf) -> None:
        sc.map_update(self.map_fd, self._key(key), leaf)

    def __delitem__(self, key) -> None:
        if self.map_type in ARRAYS:  # an array's entries always exist: deleting one zeroes it (as BCC)
            self[key] = self.Leaf()
        elif not sc.map_delete(self.map_fd, self._key(key)):
            raise KeyError(key)

    def _key(self, key):
        return key if isinstance(key, ctypes._SimpleCData | ctypes.Structure | ctypes.Union | ctypes.Array) \
            else self.Key(key)

    def __iter__(self):
        if self.map_type in ARRAYS:
            yield from (self.Key(i) for i in range(self.max_entries))
            return
        key, nxt = None, self.Key()
        while sc.map_next_key(self.map_fd, key, nxt):
            key, nxt = nxt, self.Key()
            yield key

    def __len__(self) -> int:
        return sum(1 for _ in self)

    def clear(self) -> None:
        for key in list(self):
            try:
                del self[key]
            except KeyError:  # gone meanwhile (the kernel evicts LRU entries)
                pass

    def items(self):
        out = []
        for key in list(self):
            try:
                out.append((key, self[key]))
            except KeyError:
                pass
        return out

    def values(self):
        return [value for _, value in self.items()]


def _per_cpu_leaf(leaf):
    """A per-CPU map's value: one leaf per possible CPU, each padded to 8
    bytes (the kernel's layout); 4-byte integers read as 8-byte ones (BCC)."""
    if ctypes.sizeof(leaf) % 8 == 0:
        return leaf * possible_cpus()
    if leaf in (ctypes.c_uint, ctypes.c_int):
        return (ctypes.c_uint64 if leaf is ctypes.c_uint else ctypes.c_int64) * possible_cpus()
    raise ValueError(f"per-CPU map leaf of {ctypes.sizeof(leaf)} bytes is not 8-byte aligned")

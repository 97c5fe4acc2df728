"""Kernel addresses never leave the tracer: the kernel identifies a flow by
its conntrack entry's address (``nf_conn``) and a packet by its ``sk_buff``'s,
and both would hand out kernel heap addresses (a KASLR weakening) in every
JSON line, capture, pcapng comment and shared report. Where records are read
from the kernel (tracer/drain.py), each address becomes a keyed hash of it:

- equal addresses give equal ids, so a flow's request and reply (one
  ``nf_conn``) still share their ``flow_id``, and ids are stable for the
  whole boot: two tracers running at once, or the parts of a rotated
  capture, agree;
- without the key the address cannot be recovered (SipHash-2-4, a keyed
  pseudo-random function);
- 0 (unknown) stays 0, and ids stay below 2^48, so JSON readers that use
  doubles keep them exact.

The key is 32 random bytes kept in ``/run/tracer/address-key`` (mode 0600,
root's; /run is emptied at boot) next to the boot id it belongs to; where
that cannot be written (not root), each process draws its own.
"""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

import numpy as np
import pyarrow as pa

from tracer.native import native

KEY_PATH = Path("/run/tracer/address-key")
BOOT_ID = Path("/proc/sys/kernel/random/boot_id")
ID_BITS = 48
_MASK = (1 << ID_BITS) - 1


def _boot_id() -> bytes:
    try:
        return BOOT_ID.read_bytes().strip()
    except OSError:
        return b"unknown"


def _stored_key(path: Path, boot: bytes) -> bytes | None:
    """The key in ``path`` if it is ours alone (a regular file of this user,
    no access for others) and of this boot."""
    try:
        st = os.lstat(path)
        if not stat.S_ISREG(st.st_mode) or st.st_uid != os.geteuid() or st.st_mode & 0o077:
            return None
        stored_boot, _, key = path.read_bytes().partition(b"\n")
    except OSError:
        return None
    return key if stored_boot == boot and len(key) == 32 else None


def boot_key(path: Path = KEY_PATH) -> bytes:
    """This boot's key: read, or made (atomically: two tracers starting at
    once end up with the same one); a per-process key if that fails."""
    boot = _boot_id()
    key = _stored_key(path, boot)
    if key is not None:
        return key
    key = os.urandom(32)
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(boot + b"\n" + key)
        try:
            os.link(tmp, path)  # fails if another tracer was first: use its key
        except FileExistsError:
            stored = _stored_key(path, boot)
            if stored is not None:
                os.unlink(tmp)
                return stored
            os.replace(tmp, path)  # another boot's key, or one others can read: ours replaces it
            return key
        os.unlink(tmp)
        return key
    except OSError:
        return key  # not root, or /run read-only: ids are stable for this process only


def _rotl(x: np.ndarray, b: int) -> np.ndarray:
    return (x << np.uint64(b)) | (x >> np.uint64(64 - b))


def siphash24(key: bytes, words: np.ndarray) -> np.ndarray:
    """SipHash-2-4 (Aumasson and Bernstein's keyed PRF, the one behind
    Python's and Linux's hash tables) of each 8-byte little-endian word,
    vectorised: about 40 ns per value, so every record can afford it."""
    k0, k1 = _key_words(key)
    return _siphash24(np.uint64(k0), np.uint64(k1), words.astype(np.uint64))


def _key_words(key: bytes) -> tuple[int, int]:
    return int.from_bytes(key[0:8], "little"), int.from_bytes(key[8:16], "little")


def _siphash24(k0, k1, m: np.ndarray) -> np.ndarray:
    """siphash24 with the key's words ``k0``, ``k1`` as numbers or as arrays
    (a key per value: two kinds of address hashed in one pass)."""
    v0 = (k0 ^ np.uint64(0x736F6D6570736575)) | np.zeros_like(m)
    v1 = (k1 ^ np.uint64(0x646F72616E646F6D)) | np.zeros_like(m)
    v2 = (k0 ^ np.uint64(0x6C7967656E657261)) | np.zeros_like(m)
    v3 = (k1 ^ np.uint64(0x7465646279746573)) | np.zeros_like(m)

    def rounds(n: int) -> None:
        nonlocal v0, v1, v2, v3
        for _ in range(n):
            v0 += v1; v1 = _rotl(v1, 13); v1 ^= v0; v0 = _rotl(v0, 32)  # noqa: E702
            v2 += v3; v3 = _rotl(v3, 16); v3 ^= v2  # noqa: E702
            v0 += v3; v3 = _rotl(v3, 21); v3 ^= v0  # noqa: E702
            v2 += v1; v1 = _rotl(v1, 17); v1 ^= v2; v2 = _rotl(v2, 32)  # noqa: E702

    v3 ^= m
    rounds(2)
    v0 ^= m
    last = np.uint64(8 << 56)  # the message length, 8, in the final block
    v3 ^= last
    rounds(2)
    v0 ^= last
    v2 ^= np.uint64(0xFF)
    rounds(4)
    return v0 ^ v1 ^ v2 ^ v3


class AddressHasher:
    """Replaces kernel addresses in numpy columns by their keyed ids."""

    def __init__(self, key: bytes | None = None, compiled: bool = True) -> None:
        """``compiled``: hash with tracer._native where it was built
        (native/address_ids.c: the same ids, a tenth of the CPU), else with
        numpy below."""
        key = key if key is not None else boot_key()
        self._native = native() if compiled else None
        # One key per kind of address: a flow id and an skb id never match.
        self._keys = {domain: hashlib.blake2b(key, digest_size=16, person=domain).digest()
                      for domain in (b"tracer-flow", b"tracer-skb")}

    def column(self, values: np.ndarray, domain: bytes) -> np.ndarray:
        """Ids of a column of addresses; 0 stays 0."""
        return self._ids([(values, domain)])[0]

    def hide(self, records: np.ndarray) -> None:
        """In place: ``flow_id`` and ``skb`` of kernel records (journeys or
        sightings: events.JOURNEY_DTYPE / RAW_DTYPE)."""
        names = records.dtype.names or ()
        columns = [(name, domain) for name, domain in (("flow_id", b"tracer-flow"), ("skb", b"tracer-skb"))
                   if name in names]
        for (name, _), ids in zip(columns, self._ids([(records[name], domain) for name, domain in columns])):
            records[name] = ids

    def _ids(self, columns: list[tuple[np.ndarray, bytes]]) -> list[np.ndarray]:
        """Ids of each (addresses, domain) column. Each distinct address
        once: a batch holds few flows, and the kernel's allocator reuses
        sk_buff addresses all the time (Arrow's hash-based dictionary
        encoding: np.unique sorts, 5x slower); all columns' in one SipHash
        pass, each value with its domain's key (the pass is ~100 numpy
        operations whatever its length: per batch, not per column)."""
        if not columns or not len(columns[0][0]):
            return [values for values, _ in columns]
        if self._native is not None:
            return [self._native_ids(values, domain) for values, domain in columns]
        distinct, indices, k0, k1 = [], [], [], []
        for values, domain in columns:
            encoded = pa.array(np.ascontiguousarray(values)).dictionary_encode()
            uniq = encoded.dictionary.to_numpy(zero_copy_only=False).astype(np.uint64)
            distinct.append(uniq)
            indices.append(encoded.indices.to_numpy(zero_copy_only=False))
            w0, w1 = _key_words(self._keys[domain])
            k0.append(np.full(len(uniq), w0, np.uint64))
            k1.append(np.full(len(uniq), w1, np.uint64))
        uniq = np.concatenate(distinct)
        ids = _siphash24(np.concatenate(k0), np.concatenate(k1), uniq) & np.uint64(_MASK)
        ids[ids == 0] = 1
        ids[uniq == 0] = 0
        out, at = [], 0
        for (values, _), u, idx in zip(columns, distinct, indices):
            out.append(ids[at:at + len(u)][idx].astype(values.dtype, copy=False))
            at += len(u)
        return out

    def _native_ids(self, values: np.ndarray, domain: bytes) -> np.ndarray:
        """_ids of one column by the compiled loop: no dictionary encoding;
        a repeated address is hashed once per slot of the loop's small
        cache (4-6 ns a value on a batch's repeats, SipHash ~19)."""
        k0, k1 = _key_words(self._keys[domain])
        ids = np.empty(len(values), np.uint64)
        self._native.address_ids(np.ascontiguousarray(values, np.uint64), ids, k0, k1, ID_BITS)
        return ids.astype(values.dtype, copy=False)

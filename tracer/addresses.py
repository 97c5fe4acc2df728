"""Addresses as the kernel records them: 16 bytes, IPv6 as is and IPv4 as
IPv4-mapped IPv6 (``::ffff:a.b.c.d``, struct trc_addr in tracer/events.py).

Text is the usual one per family (``198.18.0.1``, ``fd00::1``); an endpoint
with a port puts an IPv6 address in brackets (``[fd00::1]:8000``), as URLs
and ``ss`` do.
"""

from __future__ import annotations

import ipaddress
from functools import lru_cache

import numpy as np
import pyarrow as pa

from tracer.errors import TracerError

V4_PREFIX = b"\0" * 10 + b"\xff\xff"


def packed(text: str) -> bytes:
    """16 bytes of an address given as text; TracerError if it is not one."""
    try:
        addr = ipaddress.ip_address(text.strip("[]") if text.startswith("[") and text.endswith("]") else text)
    except ValueError:
        raise TracerError(f"{text!r} is not an IPv4 or IPv6 address") from None
    return V4_PREFIX + addr.packed if addr.version == 4 else addr.packed


@lru_cache(maxsize=1 << 14)
def text_of(raw: bytes) -> str:
    """Text of 16 recorded bytes: dotted quad for IPv4-mapped, else IPv6."""
    if raw[:12] == V4_PREFIX:
        return ".".join(str(b) for b in raw[12:])
    return str(ipaddress.IPv6Address(raw))


def host_text(text: str) -> str:
    """A --host value in the form captures and journeys spell addresses;
    TracerError naming --host if it is not an address."""
    try:
        return text_of(packed(text))
    except TracerError:
        raise TracerError(f"--host {text!r} is not an IPv4 or IPv6 address") from None


def endpoint(ip: str, port: int) -> str:
    """'ip:port', or '[ip]:port' for IPv6."""
    return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"


def as_rows(values: np.ndarray) -> np.ndarray:
    """Recorded addresses as an (n, 16) uint8 array."""
    return np.ascontiguousarray(values, dtype=np.uint8).reshape(-1, 16)


def factorize(values: np.ndarray) -> tuple[list[str], np.ndarray]:
    """Distinct addresses of an (n, 16) array as text, and each row's index
    into them. Hash-based (Arrow's dictionary_encode on 16-byte binaries)."""
    rows = as_rows(values)
    if not len(rows):
        return [], np.zeros(0, np.int64)
    arr = pa.FixedSizeBinaryArray.from_buffers(pa.binary(16), len(rows), [None, pa.py_buffer(rows.tobytes())])
    encoded = arr.dictionary_encode()
    texts = [text_of(b) for b in encoded.dictionary.to_pylist()]
    return texts, encoded.indices.to_numpy(zero_copy_only=False).astype(np.int64)


def texts(values: np.ndarray) -> list[str]:
    """Text per row of an (n, 16) array."""
    uniq, inverse = factorize(values)
    return [uniq[i] for i in inverse.tolist()]

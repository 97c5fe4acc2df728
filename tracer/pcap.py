"""pcap-filter expressions, compiled by libpcap itself (through ctypes) into
classic BPF over a raw IPv4 packet (DLT_RAW: the packet starts at its IP
header), as tcpdump would compile them for such a link. Also libpcap's own
interpreter (pcap_offline_filter), the oracle the translations are tested
against.

Nothing here touches the kernel: compiling uses a dead handle.
"""

from __future__ import annotations

import ctypes
import ctypes.util
from dataclasses import dataclass
from functools import lru_cache

from tracer.errors import MissingCapability, TracerError

DLT_RAW = 12  # pcap/dlt.h (14 on OpenBSD only)
PCAP_NETMASK_UNKNOWN = 0xFFFFFFFF
SNAPLEN = 65535
MAX_INSNS = 4096  # far above what a sensible expression compiles to


class FilterError(TracerError):
    """An expression libpcap cannot compile, or we cannot run where asked."""


class _Insn(ctypes.Structure):
    _fields_ = [("code", ctypes.c_ushort), ("jt", ctypes.c_ubyte), ("jf", ctypes.c_ubyte), ("k", ctypes.c_uint32)]


class _Program(ctypes.Structure):
    _fields_ = [("bf_len", ctypes.c_uint), ("bf_insns", ctypes.POINTER(_Insn))]


class _Timeval(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_usec", ctypes.c_long)]


class _PktHdr(ctypes.Structure):
    _fields_ = [("ts", _Timeval), ("caplen", ctypes.c_uint32), ("len", ctypes.c_uint32)]


@lru_cache(maxsize=1)
def _names_from_files_only() -> None:
    """Host names in an expression (`host web`) are looked up by libpcap with
    getaddrinfo: from /etc/hosts, and then by DNS. tracer sends nothing to the
    network of its own accord, so this process looks names up in files only
    (glibc's per-process override of nsswitch.conf's `hosts:` line); a name
    not there is a one-line error, as any unknown name."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.__nss_configure_lookup(b"hosts", b"files")
    except (OSError, AttributeError):  # not glibc: nothing to configure
        pass


@lru_cache(maxsize=1)
def libpcap() -> ctypes.CDLL:
    """The system's libpcap (Debian/Ubuntu package libpcap0.8; scripts/setup.sh installs it)."""
    for name in (ctypes.util.find_library("pcap"), "libpcap.so.1", "libpcap.so.0.8", "libpcap.so"):
        if not name:
            continue
        try:
            lib = ctypes.CDLL(name)
        except OSError:
            continue
        lib.pcap_open_dead.restype = ctypes.c_void_p
        lib.pcap_open_dead.argtypes = [ctypes.c_int, ctypes.c_int]
        lib.pcap_compile.restype = ctypes.c_int
        lib.pcap_compile.argtypes = [ctypes.c_void_p, ctypes.POINTER(_Program), ctypes.c_char_p, ctypes.c_int, ctypes.c_uint32]
        lib.pcap_geterr.restype = ctypes.c_char_p
        lib.pcap_geterr.argtypes = [ctypes.c_void_p]
        lib.pcap_freecode.argtypes = [ctypes.POINTER(_Program)]
        lib.pcap_close.argtypes = [ctypes.c_void_p]
        lib.pcap_offline_filter.restype = ctypes.c_int
        lib.pcap_offline_filter.argtypes = [ctypes.POINTER(_Program), ctypes.POINTER(_PktHdr), ctypes.c_char_p]
        return lib
    raise MissingCapability("filter expressions need libpcap (apt-get install libpcap0.8; scripts/setup.sh does)")


@dataclass(frozen=True)
class CompiledFilter:
    """A pcap-filter expression and the classic BPF libpcap made of it:
    (code, jt, jf, k) per instruction."""

    expression: str
    insns: tuple[tuple[int, int, int, int], ...]

    def dump(self) -> str:
        """The program as `tcpdump -d` would list its opcodes (numbers): for
        error messages and debugging."""
        return "\n".join(f"({i:03d}) code=0x{c:02x} jt={jt} jf={jf} k=0x{k:x}" for i, (c, jt, jf, k) in enumerate(self.insns))


def expression_of(words) -> str | None:
    """tcpdump's rule: the words after the options, joined by spaces, are one
    expression. None when there are none (or only blanks)."""
    text = " ".join(str(w) for w in words).strip()
    return text or None


@lru_cache(maxsize=64)
def compile_filter(expression: str) -> CompiledFilter:
    """Compile with libpcap (optimised, as tcpdump does) for raw IPv4 packets.
    A syntax error, or a primitive a raw IP link has no notion of (`ether
    host`, `vlan`, `inbound`), raises FilterError with libpcap's message."""
    if "\0" in expression:
        raise FilterError("filter expression: contains a NUL byte")
    lib = libpcap()
    _names_from_files_only()
    handle = lib.pcap_open_dead(DLT_RAW, SNAPLEN)
    if not handle:
        raise MissingCapability("libpcap: pcap_open_dead failed")
    program = _Program()
    try:
        if lib.pcap_compile(handle, ctypes.byref(program), expression.encode(), 1, PCAP_NETMASK_UNKNOWN) != 0:
            message = (lib.pcap_geterr(handle) or b"cannot compile").decode(errors="replace")
            raise FilterError(f"filter expression {expression!r}: {message}")
        try:
            if program.bf_len > MAX_INSNS:
                raise FilterError(f"filter expression {expression!r}: {program.bf_len} BPF instructions (at most {MAX_INSNS})")
            insns = tuple((i.code, i.jt, i.jf, i.k) for i in program.bf_insns[: program.bf_len])
        finally:
            lib.pcap_freecode(ctypes.byref(program))
    finally:
        lib.pcap_close(handle)
    return CompiledFilter(expression, insns)


class OfflineFilter:
    """libpcap's own interpreter over one packet at a time (pcap_offline_filter):
    the reference the C translation and the vectorised run are tested against."""

    def __init__(self, compiled: CompiledFilter) -> None:
        self._lib = libpcap()
        self._insns = (_Insn * len(compiled.insns))(*[_Insn(*i) for i in compiled.insns])
        self._program = _Program(len(compiled.insns), ctypes.cast(self._insns, ctypes.POINTER(_Insn)))
        self._hdr = _PktHdr()

    def __call__(self, packet: bytes, wirelen: int | None = None) -> bool:
        """Does the filter accept these captured bytes of a packet of
        ``wirelen`` bytes (default: all of it captured)?"""
        self._hdr.caplen = len(packet)
        self._hdr.len = len(packet) if wirelen is None else wirelen
        return self._lib.pcap_offline_filter(ctypes.byref(self._program), ctypes.byref(self._hdr), packet) != 0

"""Raw ``bpf()`` syscall helpers: link creation and the kernel's own view of
programs and links.

BCC 0.26 predates netfilter and tcx links, so we build ``union bpf_attr`` by
hand. Layouts follow include/uapi/linux/bpf.h; each builder is a pure function
returning bytes so unit tests can check offsets without a kernel.
"""

from __future__ import annotations

import ctypes
import errno as errno_mod
import os
import platform
import struct
from dataclasses import dataclass

# --- syscall numbers and commands ---------------------------------------------

_SYS_BPF = {"x86_64": 321, "aarch64": 280, "arm64": 280}

BPF_MAP_CREATE = 0
BPF_MAP_LOOKUP_ELEM = 1
BPF_MAP_UPDATE_ELEM = 2
BPF_MAP_DELETE_ELEM = 3
BPF_MAP_GET_NEXT_KEY = 4
BPF_PROG_LOAD = 5
BPF_PROG_TEST_RUN = 10
BPF_PROG_GET_NEXT_ID = 11
BPF_PROG_GET_FD_BY_ID = 13
BPF_RAW_TRACEPOINT_OPEN = 17
BPF_OBJ_GET_INFO_BY_FD = 15
BPF_MAP_LOOKUP_BATCH = 24
BPF_MAP_LOOKUP_AND_DELETE_BATCH = 25
BPF_LINK_CREATE = 28
BPF_LINK_GET_FD_BY_ID = 30
BPF_LINK_GET_NEXT_ID = 31

# prog types / attach types / link types we name
BPF_PROG_TYPE_SCHED_CLS = 3
BPF_PROG_TYPE_RAW_TRACEPOINT = 17
BPF_PROG_TYPE_TRACING = 26
BPF_PROG_TYPE_NETFILTER = 32
BPF_TRACE_FENTRY = 24
BPF_NETFILTER = 45
BPF_TCX_INGRESS = 46
BPF_TCX_EGRESS = 47
BPF_MAP_TYPE_RINGBUF = 27

BPF_LINK_TYPE_NETFILTER = 10
BPF_LINK_TYPE_TCX = 11

NFPROTO_IPV4 = 2
NFPROTO_IPV6 = 10
NF_HOOKS = {"prerouting": 0, "input": 1, "forward": 2, "output": 3, "postrouting": 4}

PROG_TYPE_NAMES = {
    0: "unspec", 1: "socket_filter", 2: "kprobe", 3: "sched_cls", 4: "sched_act",
    5: "tracepoint", 6: "xdp", 7: "perf_event", 8: "cgroup_skb", 9: "cgroup_sock",
    10: "lwt_in", 11: "lwt_out", 12: "lwt_xmit", 13: "sock_ops", 14: "sk_skb",
    15: "cgroup_device", 16: "sk_msg", 17: "raw_tracepoint", 18: "cgroup_sock_addr",
    19: "lwt_seg6local", 20: "lirc_mode2", 21: "sk_reuseport", 22: "flow_dissector",
    23: "cgroup_sysctl", 24: "raw_tracepoint_writable", 25: "cgroup_sockopt",
    26: "tracing", 27: "struct_ops", 28: "ext", 29: "lsm", 30: "sk_lookup",
    31: "syscall", 32: "netfilter",
}
LINK_TYPE_NAMES = {
    0: "unspec", 1: "raw_tracepoint", 2: "tracing", 3: "cgroup", 4: "iter", 5: "netns",
    6: "xdp", 7: "perf_event", 8: "kprobe_multi", 9: "struct_ops", 10: "netfilter",
    11: "tcx", 12: "uprobe_multi", 13: "netkit", 14: "sockmap",
}

# bpf_attr is 160+ bytes on current kernels; the kernel accepts a larger,
# zero-padded buffer, so one generous size serves every command.
ATTR_SIZE = 160
PROG_INFO_SIZE = 256
LINK_INFO_SIZE = 96

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


def sys_bpf_number(machine: str | None = None) -> int:
    machine = machine or platform.machine()
    try:
        return _SYS_BPF[machine]
    except KeyError:
        raise OSError(errno_mod.ENOSYS, f"bpf() syscall number unknown for {machine}") from None


def bpf(cmd: int, attr: bytes | bytearray | ctypes.Array) -> int:
    """Call bpf(cmd, attr); return the result or raise OSError with errno.

    ``attr`` may be a ctypes buffer when the kernel writes back into it."""
    buf = attr if isinstance(attr, ctypes.Array) else ctypes.create_string_buffer(bytes(attr), max(len(attr), ATTR_SIZE))
    ret = _libc.syscall(ctypes.c_long(sys_bpf_number()), ctypes.c_long(cmd), buf, ctypes.c_uint(ctypes.sizeof(buf)))
    if ret < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"bpf(cmd={cmd}): {os.strerror(err)}")
    return ret


def _pad(b: bytes) -> bytes:
    return b.ljust(ATTR_SIZE, b"\0")


# --- BPF_LINK_CREATE -------------------------------------------------------------


def netfilter_link_attr(prog_fd: int, hooknum: int, priority: int, pf: int = NFPROTO_IPV4, nf_flags: int = 0) -> bytes:
    """prog_fd@0, target_fd@4 (0), attach_type@8, flags@12, netfilter{pf, hooknum, priority(s32), flags}@16."""
    return _pad(struct.pack("=IIII IIiI", prog_fd, 0, BPF_NETFILTER, 0, pf, hooknum, priority, nf_flags))


def tcx_link_attr(prog_fd: int, ifindex: int, attach_type: int, relative_fd: int = 0, expected_revision: int = 0, flags: int = 0) -> bytes:
    """prog_fd@0, target_ifindex@4, attach_type@8, flags@12, tcx{relative_fd@16, expected_revision u64@24}."""
    if attach_type not in (BPF_TCX_INGRESS, BPF_TCX_EGRESS):
        raise ValueError(f"not a tcx attach type: {attach_type}")
    return _pad(struct.pack("=IIII I4xQ", prog_fd, ifindex, attach_type, flags, relative_fd, expected_revision))


def link_create(attr: bytes) -> int:
    """BPF_LINK_CREATE; returns the link fd (caller owns it)."""
    return bpf(BPF_LINK_CREATE, attr)


# --- tiny programs and maps loaded without BCC (doctor probes, fallbacks) -------

# mov r0, imm ; exit
def ret_imm_insns(value: int) -> bytes:
    return struct.pack("<BBhi", 0xB7, 0x00, 0, value) + struct.pack("<BBhi", 0x95, 0, 0, 0)


def prog_load_attr(prog_type: int, insns_addr: int, insn_cnt: int, license_addr: int, name: bytes = b"",
                   expected_attach_type: int = 0, attach_btf_id: int = 0,
                   log_addr: int = 0, log_size: int = 0, log_level: int = 0, kern_version: int = 0) -> bytes:
    """BPF_PROG_LOAD: prog_type@0 insn_cnt@4 insns@8 license@16 log_level@24 log_size@28
    log_buf@32 kern_version@40 prog_flags@44 prog_name@48 prog_ifindex@64
    expected_attach_type@68 ... attach_btf_id@108."""
    head = struct.pack("=IIQQIIQII16sII", prog_type, insn_cnt, insns_addr, license_addr, log_level, log_size,
                       log_addr, kern_version, 0, name[:15], 0, expected_attach_type)
    attr = bytearray(_pad(head))
    struct.pack_into("=I", attr, 108, attach_btf_id)
    return bytes(attr)


def load_trivial_prog(prog_type: int, ret: int = 0, expected_attach_type: int = 0, attach_btf_id: int = 0,
                      name: bytes = b"tracer_probe") -> int:
    """Load a two-instruction program returning ``ret``; returns its fd."""
    insns = ctypes.create_string_buffer(ret_imm_insns(ret))
    lic = ctypes.create_string_buffer(b"GPL")
    attr = prog_load_attr(prog_type, ctypes.addressof(insns), 2, ctypes.addressof(lic), name,
                          expected_attach_type, attach_btf_id)
    return bpf(BPF_PROG_LOAD, attr)


def map_create_attr(map_type: int, key_size: int, value_size: int, max_entries: int, name: bytes = b"",
                    flags: int = 0) -> bytes:
    """BPF_MAP_CREATE: map_type@0 key_size@4 value_size@8 max_entries@12 map_flags@16
    inner_map_fd@20 numa_node@24 map_name@28."""
    return _pad(struct.pack("=IIIIIII16s", map_type, key_size, value_size, max_entries, flags, 0, 0, name[:15]))


def map_create(map_type: int, key_size: int, value_size: int, max_entries: int, name: bytes = b"",
               flags: int = 0) -> int:
    """A new map; returns its fd (the caller owns it)."""
    return bpf(BPF_MAP_CREATE, map_create_attr(map_type, key_size, value_size, max_entries, name, flags))


class ProgramRefused(OSError):
    """The verifier refused a program: the message ends with its last
    lines (one line), ``log`` is its whole log (``truncated``: past
    LOG_MAX_SIZE or the largest log the kernel took, and the log says
    which end it lost)."""

    def __init__(self, errno: int, message: str, log: str, truncated: bool = False) -> None:
        super().__init__(errno, message)
        self.log = log
        self.truncated = truncated


# The verifier's log of a refusal: tried at LOG_FIRST_SIZE, then larger up to
# libbpf's largest. A log that does not fit fails the load with ENOSPC: before
# 6.4 the kernel keeps its start, since then its end (and says in
# log_true_size how much the whole log needs).
LOG_FIRST_SIZE = 1 << 20
LOG_MAX_SIZE = 0xFFFFFFFF >> 8  # libbpf's BPF_LOG_BUF_SIZE: kernels before 5.2 refuse larger (EINVAL)
LOG_TRUE_SIZE_AT = 140  # union bpf_attr's prog load log_true_size (6.4+; 0 before)


def prog_load(prog_type: int, insns: bytes, license: bytes, name: bytes = b"", expected_attach_type: int = 0,
              kern_version: int = 0) -> int:
    """Have the kernel verify and load ``insns``; returns the program fd.
    A refusal is a ProgramRefused whose message ends with the verifier's
    last lines (the load is repeated with a log to get them)."""
    code = ctypes.create_string_buffer(insns, len(insns))
    lic = ctypes.create_string_buffer(license)
    args = (prog_type, ctypes.addressof(code), len(insns) // 8, ctypes.addressof(lic), name, expected_attach_type)
    try:
        return bpf(BPF_PROG_LOAD, prog_load_attr(*args, kern_version=kern_version))
    except OSError as exc:
        first = exc
    size, cut = LOG_FIRST_SIZE, None
    while True:
        log = ctypes.create_string_buffer(size)
        attr = ctypes.create_string_buffer(prog_load_attr(*args, log_addr=ctypes.addressof(log), log_size=size,
                                                          log_level=1, kern_version=kern_version), ATTR_SIZE)
        try:
            return bpf(BPF_PROG_LOAD, attr)
        except OSError as exc:
            truncated = exc.errno == errno_mod.ENOSPC
        needed = struct.unpack_from("=I", attr, LOG_TRUE_SIZE_AT)[0]
        if not truncated and cut is not None and not log.value:
            # a larger buffer refused before any log was written (EINVAL:
            # a size this kernel does not take): the cut one read before
            log, size, needed, truncated = *cut, True
            break
        if not truncated or size >= LOG_MAX_SIZE:
            break
        cut = log, size, needed
        size = min(LOG_MAX_SIZE, max(2 * size, needed))
    text = log.value.decode(errors="replace")
    if truncated and needed:  # a rotating log (6.4+): its end kept
        text = f"--- truncated: the verifier's log needs {needed} bytes, its start is not kept ---\n{text}"
    elif truncated:  # a fixed log (before 6.4): its start kept
        end = f"--- truncated: the verifier's log is longer than {size} bytes, its end is not kept ---"
        text = text.rstrip("\n") + "\n" + end + "\n"
    tail = " | ".join(text.strip().splitlines()[-3:])
    why = os.strerror(first.errno or 0)
    raise ProgramRefused(first.errno or 0, f"{why}: {tail}" if tail else why, text, truncated)


def raw_tracepoint_open(name: bytes, prog_fd: int) -> int:
    """BPF_RAW_TRACEPOINT_OPEN: name@0 (pointer), prog_fd@8; the attachment
    lasts as long as the returned fd."""
    tp = ctypes.create_string_buffer(name)
    return bpf(BPF_RAW_TRACEPOINT_OPEN, _pad(struct.pack("=QI", ctypes.addressof(tp), prog_fd)))


# --- map elements ------------------------------------------------------------------


def _elem_attr(map_fd: int, key, value, flags: int = 0) -> bytes:
    """map_fd@0 key@8 value/next_key@16 flags@24 (key, value: ctypes objects or None)."""
    addr = lambda obj: ctypes.addressof(obj) if obj is not None else 0  # noqa: E731
    return _pad(struct.pack("=I4xQQQ", map_fd, addr(key), addr(value), flags))


def map_lookup(map_fd: int, key, value) -> bool:
    """Read ``key``'s value into ``value``; False if there is none."""
    try:
        bpf(BPF_MAP_LOOKUP_ELEM, _elem_attr(map_fd, key, value))
        return True
    except FileNotFoundError:
        return False


def map_update(map_fd: int, key, value, flags: int = 0) -> None:
    bpf(BPF_MAP_UPDATE_ELEM, _elem_attr(map_fd, key, value, flags))


def map_delete(map_fd: int, key) -> bool:
    """False if the key was not there."""
    try:
        bpf(BPF_MAP_DELETE_ELEM, _elem_attr(map_fd, key, None))
        return True
    except FileNotFoundError:
        return False


def map_next_key(map_fd: int, key, next_key) -> bool:
    """The key after ``key`` (the first with None) into ``next_key``;
    False at the end."""
    try:
        bpf(BPF_MAP_GET_NEXT_KEY, _elem_attr(map_fd, key, next_key))
        return True
    except FileNotFoundError:
        return False


@dataclass(frozen=True)
class MapInfo:
    """What BPF_OBJ_GET_INFO_BY_FD says of a map (struct bpf_map_info)."""

    type: int
    key_size: int
    value_size: int
    max_entries: int
    flags: int
    name: bytes
    btf_id: int
    id: int = 0  # the kernel's id of the map: unique while it exists (an fd number is reused)


MAP_INFO_SIZE = 88


def decode_map_info(raw: bytes) -> MapInfo:
    """type@0 id@4 key_size@8 value_size@12 max_entries@16 map_flags@20
    name[16]@24 ... btf_id@64."""
    mtype, map_id, key_size, value_size, max_entries, flags = struct.unpack_from("=6I", raw, 0)
    return MapInfo(mtype, key_size, value_size, max_entries, flags, raw[24:40].split(b"\0", 1)[0],
                   struct.unpack_from("=I", raw, 64)[0], map_id)


def map_info_by_fd(fd: int) -> MapInfo:
    return decode_map_info(info_by_fd(fd, MAP_INFO_SIZE))


def create_ringbuf(size: int = 4096) -> int:
    return bpf(BPF_MAP_CREATE, map_create_attr(BPF_MAP_TYPE_RINGBUF, 0, 0, size, b"tracer_probe"))


# --- maps: take every entry in a few calls -----------------------------------------

def batch_attr(in_batch: int, out_batch: int, keys: int, values: int, count: int, map_fd: int) -> bytes:
    """BPF_MAP_*_BATCH: in_batch@0 out_batch@8 keys@16 values@24 (pointers),
    count@32 map_fd@36 elem_flags@40 flags@48."""
    return _pad(struct.pack("=QQQQIIQQ", in_batch, out_batch, keys, values, count, map_fd, 0, 0))


def per_cpu_u64_array(map_fd: int, entries: int, cpus: int) -> list[int]:
    """Every entry of a per-CPU array of u64 (``entries`` keys, ``cpus``
    possible CPUs), summed over CPUs, in one bpf() call
    (BPF_MAP_LOOKUP_BATCH) instead of a lookup per entry: the counters are
    read every pass of a live run. OSError where the kernel has no batch
    lookup for this map (before 5.6: EINVAL; a map type without batch
    ops: ENOTSUPP), ENOENT where it gave back fewer than ``entries``."""
    keys = (ctypes.c_uint32 * entries)()
    values = (ctypes.c_uint64 * (entries * cpus))()
    token = ctypes.c_uint32(0)  # arrays' batch token: the last key read
    attr = ctypes.create_string_buffer(batch_attr(0, ctypes.addressof(token), ctypes.addressof(keys),
                                                  ctypes.addressof(values), entries, map_fd), ATTR_SIZE)
    try:
        bpf(BPF_MAP_LOOKUP_BATCH, attr)
    except OSError as exc:
        if exc.errno != errno_mod.ENOENT:  # ENOENT: the map ended before `entries` (count says how many)
            raise
    count = struct.unpack_from("=I", attr, 32)[0]
    if count != entries or list(keys) != list(range(entries)):
        # not the kernel refusing batch lookups: counts.per_cpu_sums tries the batch again next read
        raise OSError(errno_mod.ENOENT, f"batch lookup read {count} of {entries} entries")
    return [sum(values[i * cpus:(i + 1) * cpus]) for i in range(entries)]


class TakeFailed(OSError):
    """take_all's bpf() call failed (ENOMEM in the kernel's batch op, say).
    ``taken``: the (key, value) entries earlier calls had already taken,
    deleted from the map: the caller keeps them, or they are lost."""

    def __init__(self, exc: OSError, taken: list[tuple[bytes, bytes]]) -> None:
        super().__init__(exc.errno, os.strerror(exc.errno) if exc.errno else str(exc))
        self.taken = taken


def take_all(map_fd: int, key_size: int, value_size: int, chunk: int = 64) -> list[tuple[bytes, bytes]]:
    """Look up and delete every entry of a hash map (BPF_MAP_LOOKUP_AND_DELETE_BATCH):
    one bpf() call per `chunk` entries instead of a lookup, a delete and a
    next-key per entry; an entry added meanwhile is taken now or next time,
    never lost. (key, value) bytes. A failed call raises TakeFailed with
    what was taken before it (the rest stays in the map)."""
    token_in, token_out = ctypes.c_uint64(0), ctypes.c_uint64(0)  # hash maps' batch token: a bucket index
    keys = ctypes.create_string_buffer(key_size * chunk)
    values = ctypes.create_string_buffer(value_size * chunk)
    out: list[tuple[bytes, bytes]] = []
    started = False
    while True:
        attr = ctypes.create_string_buffer(batch_attr(ctypes.addressof(token_in) if started else 0,
                                                      ctypes.addressof(token_out), ctypes.addressof(keys),
                                                      ctypes.addressof(values), chunk, map_fd), ATTR_SIZE)
        done = False
        try:
            bpf(BPF_MAP_LOOKUP_AND_DELETE_BATCH, attr)
        except OSError as exc:
            if exc.errno == errno_mod.ENOSPC and chunk < 1 << 16:  # one bucket holds more than `chunk`
                chunk *= 4
                keys = ctypes.create_string_buffer(key_size * chunk)
                values = ctypes.create_string_buffer(value_size * chunk)
                continue
            if exc.errno != errno_mod.ENOENT:  # ENOENT: the last entries (count says how many) or none
                raise TakeFailed(exc, out) from exc
            done = True
        count = struct.unpack_from("=I", attr, 32)[0]
        for i in range(count):
            out.append((keys.raw[i * key_size:(i + 1) * key_size], values.raw[i * value_size:(i + 1) * value_size]))
        if done:
            return out
        token_in.value, started = token_out.value, True


# --- the kernel's view: ids, fds, info ------------------------------------------


@dataclass(frozen=True)
class ProgInfo:
    id: int
    type: int
    name: str
    xlated_len: int = 0  # bytes of the program as verified (instructions after the verifier's rewrites)
    jited_len: int = 0  # bytes of its machine code

    @property
    def type_name(self) -> str:
        return PROG_TYPE_NAMES.get(self.type, str(self.type))


@dataclass(frozen=True)
class LinkInfo:
    id: int
    type: int
    prog_id: int
    # netfilter
    pf: int | None = None
    hooknum: int | None = None
    priority: int | None = None
    nf_flags: int | None = None
    # tcx
    ifindex: int | None = None
    attach_type: int | None = None

    @property
    def type_name(self) -> str:
        return LINK_TYPE_NAMES.get(self.type, str(self.type))


def get_next_id_attr(start_id: int) -> bytes:
    return _pad(struct.pack("=II", start_id, 0))


def _iter_ids(cmd: int):
    start = 0
    while True:
        buf = ctypes.create_string_buffer(get_next_id_attr(start), ATTR_SIZE)
        try:
            bpf(cmd, buf)
        except OSError as exc:
            if exc.errno == errno_mod.ENOENT:
                return
            raise
        start = struct.unpack_from("=I", buf.raw, 4)[0]
        yield start


def fd_by_id_attr(obj_id: int) -> bytes:
    return _pad(struct.pack("=III", obj_id, 0, 0))


def info_by_fd(fd: int, size: int) -> bytes:
    """BPF_OBJ_GET_INFO_BY_FD: bpf_fd@0 info_len@4 info@8."""
    info = ctypes.create_string_buffer(size)
    bpf(BPF_OBJ_GET_INFO_BY_FD, _pad(struct.pack("=IIQ", fd, size, ctypes.addressof(info))))
    return info.raw


def decode_prog_info(raw: bytes) -> ProgInfo:
    """type@0 id@4 tag[8]@8 jited_prog_len@16 xlated_prog_len@20 ... name[16]@64."""
    ptype, pid = struct.unpack_from("=II", raw, 0)
    jited, xlated = struct.unpack_from("=II", raw, 16)
    name = raw[64:80].split(b"\0", 1)[0].decode(errors="replace")
    return ProgInfo(id=pid, type=ptype, name=name, xlated_len=xlated, jited_len=jited)


def decode_link_info(raw: bytes) -> LinkInfo:
    """type@0 id@4 prog_id@8, type-specific union@16 (8-aligned)."""
    ltype, lid, prog_id = struct.unpack_from("=III", raw, 0)
    if ltype == BPF_LINK_TYPE_NETFILTER:
        pf, hooknum, prio, flags = struct.unpack_from("=IIiI", raw, 16)
        return LinkInfo(lid, ltype, prog_id, pf=pf, hooknum=hooknum, priority=prio, nf_flags=flags)
    if ltype == BPF_LINK_TYPE_TCX:
        ifindex, attach_type = struct.unpack_from("=II", raw, 16)
        return LinkInfo(lid, ltype, prog_id, ifindex=ifindex, attach_type=attach_type)
    return LinkInfo(lid, ltype, prog_id)


def _list(next_cmd: int, fd_cmd: int, size: int, decode):
    out = []
    for obj_id in _iter_ids(next_cmd):
        try:
            fd = bpf(fd_cmd, fd_by_id_attr(obj_id))
        except OSError as exc:
            # Went away between the two calls, or is being torn down right now.
            if exc.errno in (errno_mod.ENOENT, errno_mod.EAGAIN):
                continue
            raise
        try:
            out.append(decode(info_by_fd(fd, size)))
        finally:
            os.close(fd)
    return out


def list_progs() -> list[ProgInfo]:
    """Every BPF program loaded in the kernel (needs CAP_SYS_ADMIN)."""
    return _list(BPF_PROG_GET_NEXT_ID, BPF_PROG_GET_FD_BY_ID, PROG_INFO_SIZE, decode_prog_info)


def list_links() -> list[LinkInfo]:
    """Every BPF link in the kernel, whichever netns it lives in."""
    return _list(BPF_LINK_GET_NEXT_ID, BPF_LINK_GET_FD_BY_ID, LINK_INFO_SIZE, decode_link_info)


def prog_info_by_fd(fd: int) -> ProgInfo:
    return decode_prog_info(info_by_fd(fd, PROG_INFO_SIZE))


def link_info_by_fd(fd: int) -> LinkInfo:
    return decode_link_info(info_by_fd(fd, LINK_INFO_SIZE))


class ProgTestRun:
    """BPF_PROG_TEST_RUN of one program on one packet (benchmarks): the
    kernel runs it ``repeat`` times and reports the mean ns per run. The attr
    and buffers are made once, so a tight loop of runs allocates nothing."""

    def __init__(self, prog_fd: int, packet: bytes) -> None:
        self.prog_fd = prog_fd
        self.data_in = ctypes.create_string_buffer(packet, len(packet))
        self.data_out = ctypes.create_string_buffer(len(packet) + 256)
        self.attr = ctypes.create_string_buffer(ATTR_SIZE)

    def run(self, repeat: int) -> int:
        # union bpf_attr.test: prog_fd, retval, data_size_in, data_size_out,
        # data_in, data_out, repeat, duration (include/uapi/linux/bpf.h)
        ctypes.memset(self.attr, 0, len(self.attr))
        struct.pack_into("<IIIIQQII", self.attr, 0, self.prog_fd, 0, len(self.data_in), len(self.data_out),
                         ctypes.addressof(self.data_in), ctypes.addressof(self.data_out), repeat, 0)
        bpf(BPF_PROG_TEST_RUN, self.attr)
        return struct.unpack_from("<I", self.attr, 36)[0]

    @property
    def retval(self) -> int:
        """What the program returned on the last run."""
        return struct.unpack_from("<I", self.attr, 4)[0]

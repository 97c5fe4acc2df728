"""bpf_attr / info layouts and errno messages, checked byte by byte (no kernel)."""

from __future__ import annotations

import errno
import struct

import pytest

from tracer.errors import MissingCapability, TracerError
from tracer.kernel import bpf_syscall as sc
from tracer.kernel.links import PriorityTaken, TargetGone, link_error


def u32(buf: bytes, off: int) -> int:
    return struct.unpack_from("<I", buf, off)[0]


def test_syscall_numbers():
    assert sc.sys_bpf_number("x86_64") == 321
    assert sc.sys_bpf_number("aarch64") == 280
    with pytest.raises(OSError):
        sc.sys_bpf_number("vax")


def test_netfilter_link_attr_layout():
    attr = sc.netfilter_link_attr(prog_fd=7, hooknum=sc.NF_HOOKS["forward"], priority=-101)
    assert len(attr) == sc.ATTR_SIZE
    assert u32(attr, 0) == 7          # prog_fd
    assert u32(attr, 4) == 0          # target_fd unused
    assert u32(attr, 8) == 45         # BPF_NETFILTER
    assert u32(attr, 12) == 0         # flags
    assert u32(attr, 16) == 2         # NFPROTO_IPV4
    assert u32(attr, 20) == 2         # NF_INET_FORWARD
    assert struct.unpack_from("<i", attr, 24)[0] == -101  # signed priority
    assert u32(attr, 28) == 0
    assert set(attr[32:]) == {0}


def test_tcx_link_attr_layout():
    attr = sc.tcx_link_attr(prog_fd=9, ifindex=42, attach_type=sc.BPF_TCX_EGRESS, relative_fd=3,
                            expected_revision=0x1122334455667788)
    assert (u32(attr, 0), u32(attr, 4), u32(attr, 8), u32(attr, 12)) == (9, 42, 47, 0)
    assert u32(attr, 16) == 3
    assert u32(attr, 20) == 0  # padding before the 8-aligned u64
    assert struct.unpack_from("<Q", attr, 24)[0] == 0x1122334455667788
    with pytest.raises(ValueError):
        sc.tcx_link_attr(1, 1, sc.BPF_NETFILTER)


def test_hook_numbers():
    assert sc.NF_HOOKS == {"prerouting": 0, "input": 1, "forward": 2, "output": 3, "postrouting": 4}


def test_prog_load_attr_layout():
    attr = sc.prog_load_attr(32, insns_addr=0x1000, insn_cnt=2, license_addr=0x2000, name=b"a_very_long_program_name",
                             expected_attach_type=45, attach_btf_id=777)
    assert (u32(attr, 0), u32(attr, 4)) == (32, 2)
    assert struct.unpack_from("<QQ", attr, 8) == (0x1000, 0x2000)
    assert attr[48:64] == b"a_very_long_pro\0"  # 15 chars + NUL
    assert u32(attr, 68) == 45
    assert u32(attr, 108) == 777


def test_trivial_insns():
    insns = sc.ret_imm_insns(1)
    assert insns == bytes([0xB7, 0, 0, 0, 1, 0, 0, 0, 0x95, 0, 0, 0, 0, 0, 0, 0])


def test_map_create_attr_layout():
    attr = sc.map_create_attr(sc.BPF_MAP_TYPE_RINGBUF, 0, 0, 4096, b"rb")
    assert (u32(attr, 0), u32(attr, 12)) == (27, 4096)
    assert attr[28:31] == b"rb\0"


def test_id_and_fd_attrs():
    assert sc.get_next_id_attr(5)[:8] == struct.pack("<II", 5, 0)
    assert sc.fd_by_id_attr(17)[:12] == struct.pack("<III", 17, 0, 0)


def test_decode_prog_info():
    raw = bytearray(sc.PROG_INFO_SIZE)
    struct.pack_into("<II", raw, 0, 32, 1234)
    struct.pack_into("<II", raw, 16, 901, 1416)
    raw[64:80] = b"nf_count".ljust(16, b"\0")
    info = sc.decode_prog_info(bytes(raw))
    assert (info.id, info.type, info.name, info.type_name) == (1234, 32, "nf_count", "netfilter")
    assert (info.jited_len, info.xlated_len) == (901, 1416)


def test_decode_netfilter_link_info():
    raw = bytearray(sc.LINK_INFO_SIZE)
    struct.pack_into("<III", raw, 0, sc.BPF_LINK_TYPE_NETFILTER, 55, 1234)
    struct.pack_into("<IIiI", raw, 16, 2, 4, -99, 0)
    info = sc.decode_link_info(bytes(raw))
    assert (info.type_name, info.id, info.prog_id) == ("netfilter", 55, 1234)
    assert (info.pf, info.hooknum, info.priority, info.nf_flags) == (2, 4, -99, 0)
    assert info.ifindex is None


def test_decode_tcx_link_info():
    raw = bytearray(sc.LINK_INFO_SIZE)
    struct.pack_into("<III", raw, 0, sc.BPF_LINK_TYPE_TCX, 56, 99)
    struct.pack_into("<II", raw, 16, 7, sc.BPF_TCX_INGRESS)
    info = sc.decode_link_info(bytes(raw))
    assert (info.type_name, info.ifindex, info.attach_type, info.priority) == ("tcx", 7, 46, None)


def test_decode_other_link_info():
    raw = struct.pack("<III", 1, 3, 4).ljust(sc.LINK_INFO_SIZE, b"\0")
    info = sc.decode_link_info(raw)
    assert (info.type_name, info.id, info.prog_id) == ("raw_tracepoint", 3, 4)


def test_errno_messages():
    busy = link_error(OSError(errno.EBUSY, "x"), "netfilter", hook="forward", priority=0)
    assert isinstance(busy, TracerError)
    assert "priority 0 on forward is already taken" in str(busy) and "-1" in str(busy)
    assert isinstance(busy, PriorityTaken) and busy.errno == errno.EBUSY  # typed: callers match the type, not the words

    perm = link_error(OSError(errno.EPERM, "x"), "tcx")
    assert isinstance(perm, MissingCapability) and "root" in str(perm)

    nodev = link_error(OSError(errno.ENODEV, "x"), "tcx", ifindex=12, netns="trct-x")
    assert str(nodev) == "no such interface: ifindex 12 in netns trct-x"
    assert isinstance(nodev, TargetGone)  # an interface gone while starting is skipped, not fatal (sensors/tc.py)
    assert isinstance(link_error(OSError(errno.ENOENT, "x"), "tcx", netns="trct-x"), TargetGone)
    assert not isinstance(perm, TargetGone)

    inval = link_error(OSError(errno.EINVAL, "x"), "netfilter")
    assert isinstance(inval, MissingCapability) and str(inval).startswith("kernel does not support netfilter")

    other = link_error(OSError(errno.E2BIG, "x"), "tcx")
    assert "tcx link failed" in str(other)
    for exc in (busy, perm, nodev, inval, other):
        assert "\n" not in str(exc)


class _Verifier:
    """bpf(BPF_PROG_LOAD) refusing with a ``log`` of ``size`` bytes: a log
    buffer too small for it keeps its start (``rotating`` False, before 6.4)
    or its end and says in log_true_size how much it needs (6.4+), ENOSPC."""

    def __init__(self, size: int, rotating: bool, largest: int = 0xFFFFFFFF >> 2) -> None:
        lines = [f"{i}: (b7) r1 = 0" for i in range(size // 16)]
        self.log = ("\n".join(lines) + "\nR0 !read_ok\n").encode()
        self.rotating, self.sizes, self.largest = rotating, [], largest

    def __call__(self, cmd, attr) -> int:
        import ctypes

        assert cmd == sc.BPF_PROG_LOAD
        raw = bytes(attr)
        level, size, addr = u32(raw, 24), u32(raw, 28), struct.unpack_from("<Q", raw, 32)[0]
        if not level:
            raise OSError(errno.EACCES, "refused")
        self.sizes.append(size)
        if size > self.largest:  # the kernel's largest log (UINT_MAX >> 8 before 5.2): refused, nothing written
            raise OSError(errno.EINVAL, "refused")
        fits = len(self.log) + 1 <= size
        kept = self.log if fits else self.log[-(size - 1):] if self.rotating else self.log[:size - 1]
        ctypes.memmove(addr, kept + b"\0", len(kept) + 1)
        if self.rotating:
            ctypes.memmove(ctypes.addressof(attr) + sc.LOG_TRUE_SIZE_AT, struct.pack("<I", len(self.log) + 1), 4)
        raise OSError(errno.EACCES if fits else errno.ENOSPC, "refused")


@pytest.mark.parametrize("rotating", [True, False], ids=["6.4+", "before-6.4"])
def test_a_verifier_log_past_the_first_buffer_is_read_whole(monkeypatch, rotating):
    """A log over LOG_FIRST_SIZE is asked for again in a larger buffer
    (the size the kernel says it needs, or twice), not cut: the error's
    last lines are the verifier's verdict, not the middle of its walk."""
    kernel = _Verifier(3 << 20, rotating)
    monkeypatch.setattr(sc, "bpf", kernel)
    with pytest.raises(sc.ProgramRefused) as exc:
        sc.prog_load(sc.BPF_PROG_TYPE_SCHED_CLS, sc.ret_imm_insns(0), b"GPL")
    assert exc.value.log.encode() == kernel.log and not exc.value.truncated
    assert str(exc.value).endswith("R0 !read_ok") and exc.value.errno == errno.EACCES
    assert kernel.sizes == ([1 << 20, len(kernel.log) + 1] if rotating else [1 << 20, 2 << 20, 4 << 20])


@pytest.mark.parametrize("rotating", [True, False], ids=["6.4+", "before-6.4"])
def test_a_verifier_log_past_the_largest_buffer_says_it_is_truncated(monkeypatch, rotating):
    kernel = _Verifier(sc.LOG_MAX_SIZE + (1 << 20), rotating)
    monkeypatch.setattr(sc, "bpf", kernel)
    with pytest.raises(sc.ProgramRefused) as exc:
        sc.prog_load(sc.BPF_PROG_TYPE_SCHED_CLS, sc.ret_imm_insns(0), b"GPL")
    assert exc.value.truncated and kernel.sizes[-1] == sc.LOG_MAX_SIZE == (16 << 20) - 1
    log = exc.value.log
    if rotating:  # its end kept: the verdict is there, the start is said lost
        assert log.startswith("--- truncated: the verifier's log needs ") and log.endswith("R0 !read_ok\n")
        assert str(exc.value).endswith("R0 !read_ok")
    else:  # its start kept: the end says it is lost (the message too)
        assert log.startswith("0: (b7) r1 = 0\n") and log.endswith("its end is not kept ---\n")
        assert "truncated" in str(exc.value)
    assert len(log) < sc.LOG_MAX_SIZE + 100


def test_the_largest_log_is_what_every_kernel_takes():
    """libbpf's BPF_LOG_BUF_SIZE: kernels before 5.2 refuse a larger log_size."""
    assert sc.LOG_MAX_SIZE == 0xFFFFFFFF >> 8 == 16_777_215


@pytest.mark.parametrize("rotating", [True, False], ids=["6.4+", "before-6.4"])
def test_a_larger_log_the_kernel_refuses_keeps_the_log_read_before(monkeypatch, rotating):
    """A retry refused with another errno than ENOSPC before the kernel
    wrote any log (here: a log size over this kernel's largest, EINVAL)
    keeps the cut log of the attempt before it, said to be truncated: not
    an empty log and an error without the verifier's lines."""
    kernel = _Verifier(3 << 20, rotating, largest=2 << 20)
    monkeypatch.setattr(sc, "bpf", kernel)
    with pytest.raises(sc.ProgramRefused) as exc:
        sc.prog_load(sc.BPF_PROG_TYPE_SCHED_CLS, sc.ret_imm_insns(0), b"GPL")
    assert exc.value.truncated and exc.value.errno == errno.EACCES
    log = exc.value.log
    if rotating:  # 1 MiB, then the size it needs (over 2 MiB): refused; the 1 MiB end kept
        assert kernel.sizes == [1 << 20, len(kernel.log) + 1]
        assert log.startswith(f"--- truncated: the verifier's log needs {len(kernel.log) + 1} bytes")
        assert log.endswith("R0 !read_ok\n") and str(exc.value).endswith("R0 !read_ok")
        assert len(log) > (1 << 20) - 100
    else:  # 1, 2 MiB (both cut), then 4: refused; the 2 MiB start kept
        assert kernel.sizes == [1 << 20, 2 << 20, 4 << 20]
        assert log.startswith("0: (b7) r1 = 0\n") and log.endswith(f"longer than {2 << 20} bytes, its end is not kept ---\n")
        assert len(log) > (2 << 20) - 100

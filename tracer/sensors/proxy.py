"""Proxy sensor: syscall tracepoints on docker-proxy's relaying calls
(bpf/proxy.c), which tell exactly which client connection each backend
connection carries. Attached only when docker-proxy processes exist."""

from __future__ import annotations

import ctypes
import platform

from tracer.sensors.base import Sensor

# x86-64: raw sys_enter/sys_exit tracepoints, one cheap exit for every
# other syscall (bpf/proxy.c PX_RAW_SYSCALLS); elsewhere the syscalls:*
# tracepoints below, which cost other processes more per call
# (scripts/bench_proxy_sensor.py).
RAW = platform.machine() == "x86_64"
RAW_TRACEPOINTS = (("sys_enter", "trc_px_sys_enter"), ("sys_exit", "trc_px_sys_exit"))

# (tracepoint, program): splice is how docker-proxy relays (Go's io.Copy
# between two TCP connections); read/write and recvfrom/sendto are how
# other proxies do.
TRACEPOINTS = (
    ("syscalls:sys_enter_splice", "trc_px_splice_enter"),
    ("syscalls:sys_exit_splice", "trc_px_take_exit"),
    ("syscalls:sys_enter_read", "trc_px_read_enter"),
    ("syscalls:sys_exit_read", "trc_px_take_exit"),
    ("syscalls:sys_enter_recvfrom", "trc_px_read_enter"),
    ("syscalls:sys_exit_recvfrom", "trc_px_take_exit"),
    ("syscalls:sys_enter_write", "trc_px_write_enter"),
    ("syscalls:sys_enter_sendto", "trc_px_write_enter"),
)


class ProxySensor(Sensor):
    name = "proxy"
    source_file = "proxy.c"
    needs = ("raw_tracepoints",) if RAW else ("tracepoints",)  # sys_enter/sys_exit, or syscalls:*
    optional = True

    def __init__(self) -> None:
        self.bpf = None
        self.attached: list[str] = []

    def cflags(self):
        return ["-DPX_RAW_SYSCALLS"] if RAW else []

    def offsets(self):
        regs = {"OFF_REGS_ARG0": ("pt_regs", "di", 8), "OFF_REGS_ARG2": ("pt_regs", "dx", 8),
                "OFF_REGS_ARG4": ("pt_regs", "r8", 8), "OFF_REGS_ORIG_AX": ("pt_regs", "orig_ax", 8)} if RAW else {}
        return {**regs,
            "OFF_TASK_FILES": ("task_struct", "files", 8),
            "OFF_FILES_FDT": ("files_struct", "fdt", 8),
            "OFF_FDT_FD": ("fdtable", "fd", 8),
            "OFF_FDT_MAX_FDS": ("fdtable", "max_fds", 4),
            "OFF_FILE_PRIVATE": ("file", "private_data", 8),
            "OFF_SOCKET_SK": ("socket", "sk", 8),
            "OFF_SOCKET_FILE": ("socket", "file", 8),
            "OFF_SKC_FAMILY": ("sock", "__sk_common.skc_family", 2),
            "OFF_SKC_DADDR": ("sock", "__sk_common.skc_daddr", 4),
            "OFF_SKC_RCV_SADDR": ("sock", "__sk_common.skc_rcv_saddr", 4),
            "OFF_SKC_DPORT": ("sock", "__sk_common.skc_dport", 2),
            "OFF_SKC_NUM": ("sock", "__sk_common.skc_num", 2),
            "OFF_SKC_V6_DADDR": ("sock", "__sk_common.skc_v6_daddr", 16),
            "OFF_SKC_V6_RCV_SADDR": ("sock", "__sk_common.skc_v6_rcv_saddr", 16),
            "OFF_SK_PROTOCOL": ("sock", "sk_protocol", 2),
        }

    def attach(self, bpf) -> None:
        self.bpf = bpf
        try:
            if RAW:
                for tp, fn in RAW_TRACEPOINTS:
                    bpf.attach_raw_tracepoint(tp=tp, fn_name=fn)
                    self.attached.append(tp)
                return
            for tp, fn in TRACEPOINTS:
                bpf.attach_tracepoint(tp=tp, fn_name=fn)
                self.attached.append(tp)
        except BaseException:
            self.detach()
            raise

    def set_pids(self, pids) -> None:
        """The processes whose relaying calls are looked at."""
        table = self.bpf["proxy_pids"]
        table.clear()
        for pid in pids:
            table[ctypes.c_uint32(pid)] = ctypes.c_uint8(1)

    def detach(self) -> None:
        for tp in self.attached:
            try:
                if RAW:
                    self.bpf.detach_raw_tracepoint(tp=tp)
                else:
                    self.bpf.detach_tracepoint(tp=tp)
            except Exception:
                pass
        self.attached = []

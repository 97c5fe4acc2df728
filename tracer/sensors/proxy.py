"""Proxy sensor: raw tracepoints on TCP receives and socket sends
(bpf/proxy.c), which tell exactly which client connection each backend
connection of docker-proxy carries. Attached only when docker-proxy
processes exist; if this kernel lacks one of its tracepoints, it says so
and tracing goes on without proxy links."""

from __future__ import annotations

import ctypes
import logging
import time

from tracer.kernel.probes import SOCKET_TRACEPOINTS
from tracer.kernel.bpf_syscall import BPF_PROG_TYPE_RAW_TRACEPOINT  # what BCC's attach_raw_tracepoint loads
from tracer.sensors.base import Sensor

log = logging.getLogger(__name__)

# (raw tracepoint, program), in SOCKET_TRACEPOINTS' order: what the proxy
# threads take from TCP sockets, and what they give to sockets.
RAW_TRACEPOINTS = tuple(zip(SOCKET_TRACEPOINTS, ("trc_px_recv", "trc_px_send")))
# How often a run looks at px_unseen (a map read, ~0.1 ms from Python under
# load, on every pass before): a warning a few seconds late says the same.
UNSEEN_EVERY_S = 5.0


class ProxySensor(Sensor):
    name = "proxy"
    source_file = "proxy.c"
    needs = ("raw_tracepoints", "socket_tracepoints")
    optional = True

    def __init__(self) -> None:
        self.bpf = None
        self.attached: list[str] = []
        self.unavailable: str | None = None  # why no link can be seen here (a tracepoint missing)
        self._warned_unseen = False
        self._unseen_looked_at = float("-inf")  # time.monotonic() of warn_unseen's last map read

    def offsets(self):
        return {
            "OFF_SKC_FAMILY": ("sock", "__sk_common.skc_family", 2),
            "OFF_SKC_DADDR": ("sock", "__sk_common.skc_daddr", 4),
            "OFF_SKC_RCV_SADDR": ("sock", "__sk_common.skc_rcv_saddr", 4),
            "OFF_SKC_DPORT": ("sock", "__sk_common.skc_dport", 2),
            "OFF_INET_SPORT": ("inet_sock", "inet_sport", 2),
            "OFF_SKC_V6_DADDR": ("sock", "__sk_common.skc_v6_daddr", 16),
            "OFF_SKC_V6_RCV_SADDR": ("sock", "__sk_common.skc_v6_rcv_saddr", 16),
            "OFF_SK_PROTOCOL": ("sock", "sk_protocol", 2),
            "OFF_SK_SHUTDOWN": ("sock", "sk_shutdown", 1),
            "OFF_SK_LOCK_OWNED": ("sock", "sk_lock.owned", 4),
            "OFF_TP_COPIED_SEQ": ("tcp_sock", "copied_seq", 4),
            "OFF_TP_RCV_NXT": ("tcp_sock", "rcv_nxt", 4),
            "OFF_TP_BYTES_RECEIVED": ("tcp_sock", "bytes_received", 8),
            "OFF_TP_WRITE_SEQ": ("tcp_sock", "write_seq", 4),
        }

    def programs(self):
        return [(fn, BPF_PROG_TYPE_RAW_TRACEPOINT, -1) for _, fn in RAW_TRACEPOINTS]

    def attach(self, bpf) -> None:
        """Both tracepoints or none. The sensor is optional: a kernel without
        one of them, or an attach that fails, gets a warning and no proxy
        links, and tracing goes on."""
        self.bpf = bpf
        missing = [tp for tp, _ in RAW_TRACEPOINTS if not tracepoint_exists(tp)]
        if missing:
            self._unavailable(f"this kernel has no {' or '.join(missing)} tracepoint")
            return
        try:
            for tp, fn in RAW_TRACEPOINTS:
                bpf.attach_raw_tracepoint(tp=tp, fn_name=fn)
                self.attached.append(tp)
        except Exception as exc:  # BCC raises bare Exception
            self.detach()
            self._unavailable(f"cannot attach to {tp}: {exc}")
        except BaseException:
            self.detach()
            raise

    def _unavailable(self, why: str) -> None:
        self.unavailable = f"{why}: docker-proxy's two connections are not joined"
        log.warning("proxy links: %s", self.unavailable)

    def set_pids(self, pids) -> None:
        """The processes whose relaying is looked at."""
        table = self.bpf["proxy_pids"]
        table.clear()
        for pid in pids:
            table[ctypes.c_uint32(pid)] = ctypes.c_uint8(1)

    def warn_unseen(self) -> None:
        """Once, if a proxy sent on MPTCP sockets, which the hooks cannot
        follow: its connections are not joined, and the user is told why."""
        if self.bpf is None or self._warned_unseen or not self.attached:
            return
        now = time.monotonic()
        if now - self._unseen_looked_at < UNSEEN_EVERY_S:
            return
        self._unseen_looked_at = now
        sends = self.bpf["px_unseen"][ctypes.c_int(0)].value
        if sends:
            self._warned_unseen = True
            log.warning("proxy links: a docker-proxy sends over MPTCP sockets (%d sends so far), which the proxy "
                        "sensor cannot follow (it sees TCP sockets only): those connections are not joined", sends)

    def detach(self) -> None:
        for tp in self.attached:
            try:
                self.bpf.detach_raw_tracepoint(tp=tp)
            except Exception:
                pass
        self.attached = []


def tracepoint_exists(name: str) -> bool:
    """Whether the running kernel has tracepoint `name` (BTF names a
    btf_trace_NAME typedef for each); True when BTF cannot tell, so the
    attach's own error speaks."""
    from tracer.errors import MissingCapability
    from tracer.kernel.btf import has_type

    try:
        return has_type(f"btf_trace_{name}")
    except MissingCapability:
        return True

"""What this kernel and host can do, each capability probed for real.

Every probe loads or attaches something tiny and takes it away again. Probes
that attach to network hooks do so inside a private, unnamed netns made on this
thread (``in_fresh_netns``), so the host's hooks are never touched and a crash
mid-probe leaves nothing behind. All BCC probe functions live in one module so
we pay the ~2 s compile once.
"""

from __future__ import annotations

import ctypes
import os
import struct
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

from tracer.errors import TracerError, one_line
from tracer.kernel import bpf_syscall as sc
from tracer.kernel import links
from tracer.kernel.netns import in_fresh_netns

PROBE_TRACEPOINT = ("net", "netif_receive_skb")
# The docker-proxy link sensor's raw tracepoints (bpf/proxy.c): a TCP
# reader took bytes, a socket send gave bytes.
SOCKET_TRACEPOINTS = ("tcp_rcv_space_adjust", "sock_send_length")
FENTRY_TARGET = "tcp_v4_rcv"
# no table in a fresh netns uses this, but stay off the tables' own numbers anyway
NF_PROBE_PRIORITY = -98

PROBE_SRC = r"""
#include <uapi/linux/pkt_cls.h>
int doctor_tp(void *ctx) { return 0; }
int doctor_raw(void *ctx) { return 0; }
int doctor_kprobe(void *ctx) { return 0; }
int doctor_tc(struct __sk_buff *skb) { return TC_ACT_OK; }
struct nfctx { u64 state; u64 skb; };
int doctor_nf(struct nfctx *ctx) { return 1; /* NF_ACCEPT */ }
"""

# names of everything doctor loads: tests check none survives
PROBE_PROG_NAMES = ("doctor_tp", "doctor_raw", "doctor_kprobe", "doctor_tc", "doctor_nf", "tracer_doctor")


@dataclass
class Capability:
    name: str
    ok: bool
    detail: str
    required: bool = False
    fix: str = ""

    @property
    def status(self) -> str:
        return "ok" if self.ok else "missing"

    def to_dict(self) -> dict:
        return {**asdict(self), "status": self.status}


@dataclass
class Report:
    capabilities: list[Capability] = field(default_factory=list)

    @property
    def missing_required(self) -> list[Capability]:
        return [c for c in self.capabilities if c.required and not c.ok]

    @property
    def ok(self) -> bool:
        return not self.missing_required

    def get(self, name: str) -> Capability:
        return next(c for c in self.capabilities if c.name == name)

    def to_dict(self) -> dict:
        return {"ok": self.ok, "capabilities": [c.to_dict() for c in self.capabilities],
                "missing": [c.name for c in self.missing_required]}


def _err(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.errno:
        import errno

        return f"{errno.errorcode.get(exc.errno, exc.errno)}: {os.strerror(exc.errno)}"
    return one_line(exc) or type(exc).__name__


def _mounts() -> dict[str, str]:
    """fs type -> first mount point, from /proc/self/mounts."""
    out: dict[str, str] = {}
    with open("/proc/self/mounts") as f:
        for line in f:
            parts = line.split()
            if len(parts) >= 3:
                out.setdefault(parts[2], parts[1])
    return out


def _libbpf():
    try:
        lib = ctypes.CDLL("libbpf.so.1")
    except OSError:
        return None
    lib.libbpf_find_vmlinux_btf_id.argtypes = [ctypes.c_char_p, ctypes.c_int]
    lib.libbpf_find_vmlinux_btf_id.restype = ctypes.c_int
    return lib


def probe_root() -> Capability:
    ok = os.geteuid() == 0
    return Capability("root", ok, "euid 0" if ok else f"euid {os.geteuid()}", True, "run as root (sudo)")


def probe_mounts() -> list[Capability]:
    m = _mounts()
    bpffs = Capability("bpffs", "bpf" in m, m.get("bpf", "not mounted"), False,
                       "mount -t bpf bpf /sys/fs/bpf")
    tracefs = Capability("tracefs", "tracefs" in m, m.get("tracefs", "not mounted"), False,
                         "mount -t tracefs tracefs /sys/kernel/tracing")
    return [bpffs, tracefs]


def probe_btf() -> Capability:
    """The kernel's BTF read as tracing reads it (tracer/kernel/btf.py):
    the same parser, and the struct offsets every program is built with."""
    from tracer.kernel.btf import VMLINUX_BTF, kernel_btf, resolve_offsets
    from tracer.kernel.program import COMMON_OFFSETS

    fix = "boot a kernel built with CONFIG_DEBUG_INFO_BTF=y"
    try:
        kernel_btf()
        offsets = resolve_offsets(COMMON_OFFSETS)
        size = os.path.getsize(VMLINUX_BTF)
    except Exception as exc:  # MissingCapability (absent, unreadable, malformed, a member missing), OSError
        return Capability("btf", False, _err(exc)[:200], True, fix)
    return Capability("btf", True, f"{VMLINUX_BTF}, {size // 1024} KiB, parsed; the {len(offsets)} struct offsets "
                      "every program uses resolved", True, fix)


def probe_ringbuf() -> Capability:
    try:
        os.close(sc.create_ringbuf(4096))
        return Capability("ring_buffer", True, "BPF_MAP_TYPE_RINGBUF map created", True)
    except OSError as exc:
        return Capability("ring_buffer", False, f"ringbuf map create: {_err(exc)}", True,
                          "needs Linux >= 5.8 with BPF ring buffer")


def probe_fentry() -> Capability:
    fix = "optional: needs CONFIG_BPF_JIT + trampolines and no lockdown; tracer works without it"
    lib = _libbpf()
    if lib is None:
        return Capability("fentry", False, "libbpf.so.1 not found to resolve a BTF id", False, fix)
    btf_id = lib.libbpf_find_vmlinux_btf_id(FENTRY_TARGET.encode(), sc.BPF_TRACE_FENTRY)
    if btf_id <= 0:
        return Capability("fentry", False, f"{FENTRY_TARGET} not found in BTF", False, fix)
    try:
        prog = sc.load_trivial_prog(sc.BPF_PROG_TYPE_TRACING, 0, sc.BPF_TRACE_FENTRY, btf_id, b"tracer_doctor")
    except OSError as exc:
        return Capability("fentry", False, f"loading a fentry program on {FENTRY_TARGET}: {_err(exc)}", False, fix)
    try:
        attr = sc._pad(struct.pack("=IIII", prog, 0, sc.BPF_TRACE_FENTRY, 0))
        os.close(sc.link_create(attr))
        return Capability("fentry", True, f"fentry on {FENTRY_TARGET} attached and detached", False)
    except OSError as exc:
        return Capability("fentry", False, f"attaching fentry on {FENTRY_TARGET}: {_err(exc)}", False, fix)
    finally:
        os.close(prog)


def probe_headers() -> Capability:
    from tracer.kernel.headers import ensure_bcc_headers

    try:
        src = ensure_bcc_headers()
        return Capability("headers", True, src.describe(), True)
    except TracerError as exc:
        return Capability("headers", False, str(exc), True, "run scripts/setup.sh (installs linux-headers)")


def _prog_fd(bcc_module, func: str, prog_type: int, attach_type: int = -1, ret: int = 0,
             expected_attach_type: int = 0) -> tuple[int, bool]:
    """A program fd: BCC's when the probe module compiled, else a trivial one (owned)."""
    if bcc_module is not None:
        return bcc_module.load_func(func.encode(), prog_type, attach_type=attach_type).fd, False
    return sc.load_trivial_prog(prog_type, ret, expected_attach_type, name=b"tracer_doctor"), True


def _with_prog(bcc_module, func: str, prog_type: int, use: Callable[[int], str], attach_type: int = -1,
               ret: int = 0) -> str:
    fd, owned = _prog_fd(bcc_module, func, prog_type, attach_type, ret, max(attach_type, 0))
    try:
        return use(fd)
    finally:
        if owned:
            os.close(fd)


def probe_tcx(bcc_module) -> Capability:
    fix = "needs Linux >= 6.6 (tcx); clsact is used instead when it is missing"

    def use(fd: int) -> str:
        with in_fresh_netns():
            for direction in ("ingress", "egress"):
                links.TcxLink(fd, 1, direction).close()  # lo is ifindex 1 in a new netns
        return "tcx link on lo ingress+egress in a private netns, attached and detached"

    try:
        return Capability("tcx", True, _with_prog(bcc_module, "doctor_tc", sc.BPF_PROG_TYPE_SCHED_CLS, use), False, fix)
    except (OSError, TracerError) as exc:
        return Capability("tcx", False, _err(exc), False, fix)


def probe_clsact(bcc_module) -> Capability:
    fix = "needs CONFIG_NET_CLS_ACT, CONFIG_NET_SCH_INGRESS and CONFIG_NET_CLS_BPF"

    def use(fd: int) -> str:
        with in_fresh_netns():
            links.ClsactFilter(fd, 1, "ingress", name="tracer_doctor").close()
        return "clsact + bpf filter on lo in a private netns, added and removed"

    try:
        return Capability("clsact", True, _with_prog(bcc_module, "doctor_tc", sc.BPF_PROG_TYPE_SCHED_CLS, use), False, fix)
    except Exception as exc:  # pyroute2 raises its own NetlinkError
        return Capability("clsact", False, _err(exc), False, fix)


def probe_netfilter(bcc_module) -> Capability:
    fix = "needs Linux >= 6.4 with CONFIG_NETFILTER_BPF_LINK"

    def use(fd: int) -> str:
        with in_fresh_netns():
            with links.NetfilterLink(fd, "prerouting", NF_PROBE_PRIORITY) as link:
                info = link.info()
        return (f"netfilter link (ipv4 prerouting, priority {info.priority}) in a private netns, "
                "attached and detached")

    try:
        detail = _with_prog(bcc_module, "doctor_nf", sc.BPF_PROG_TYPE_NETFILTER, use,
                            attach_type=sc.BPF_NETFILTER, ret=1)
        return Capability("netfilter_links", True, detail, True, fix)
    except (OSError, TracerError) as exc:
        return Capability("netfilter_links", False, _err(exc), True, fix)


def probe_tracepoints(bcc_module, why_not: str) -> list[Capability]:
    """Perf tracepoints (no sensor attaches them now: informational), raw
    tracepoints, and the raw tracepoints the proxy sensor attaches."""
    cat, name = PROBE_TRACEPOINT
    tp_fix = "needs CONFIG_TRACEPOINTS and tracefs (mount -t tracefs tracefs /sys/kernel/tracing)"
    sock_fix = (f"optional: docker-proxy links need the {' and '.join(SOCKET_TRACEPOINTS)} tracepoints; "
                "tracer works without them")
    if bcc_module is None:
        return [Capability("tracepoints", False, why_not, False, tp_fix),
                Capability("raw_tracepoints", False, why_not, False, tp_fix),
                Capability("socket_tracepoints", False, why_not, False, sock_fix)]
    out = []
    tp = f"{cat}:{name}".encode()
    try:
        bcc_module.attach_tracepoint(tp=tp, fn_name=b"doctor_tp")
        bcc_module.detach_tracepoint(tp=tp)
        out.append(Capability("tracepoints", True, f"{cat}:{name} attached and detached", False, tp_fix))
    except Exception as exc:
        out.append(Capability("tracepoints", False, f"{cat}:{name}: {_err(exc)}", False, tp_fix))
    out.append(_probe_raw(bcc_module, "raw_tracepoints", (name,), tp_fix))
    out.append(_probe_raw(bcc_module, "socket_tracepoints", SOCKET_TRACEPOINTS, sock_fix))
    return out


def _probe_raw(bcc_module, capability: str, names: tuple[str, ...], fix: str) -> Capability:
    """Each raw tracepoint of `names` attached and detached."""
    for name in names:
        try:
            bcc_module.attach_raw_tracepoint(tp=name.encode(), fn_name=b"doctor_raw")
            bcc_module.detach_raw_tracepoint(tp=name.encode())
        except Exception as exc:
            return Capability(capability, False, f"raw {name}: {_err(exc)}", False, fix)
    return Capability(capability, True, f"raw {', '.join(names)} attached and detached", False, fix)


def probe_kprobes(bcc_module) -> Capability:
    fix = "optional: needs CONFIG_KPROBES; tracer works without it"
    pmu = "/sys/bus/event_source/devices/kprobe/type"
    events = [p for p in ("/sys/kernel/tracing/kprobe_events", "/sys/kernel/debug/tracing/kprobe_events")
              if os.path.exists(p)]
    if not os.path.exists(pmu) and not events:
        # BCC would only print noise trying; the kernel has no way to make one
        return Capability("kprobes", False, "no kprobe PMU and no kprobe_events (CONFIG_KPROBES off)", False, fix)
    if bcc_module is None:
        return Capability("kprobes", False, "kprobe interface present but BCC unavailable to try it", False, fix)
    try:
        bcc_module.attach_kprobe(event=FENTRY_TARGET.encode(), fn_name=b"doctor_kprobe")
        bcc_module.detach_kprobe(event=FENTRY_TARGET.encode())
        return Capability("kprobes", True, f"kprobe on {FENTRY_TARGET} attached and detached", False, fix)
    except Exception as exc:
        return Capability("kprobes", False, f"kprobe on {FENTRY_TARGET}: {_err(exc)}", False, fix)


def probe_nftables_trace() -> Capability:
    """nf_tables tracing, for real, in a fresh netns: a table marks one UDP
    datagram to 127.0.0.1 with `meta nftrace set 1`; its trace must arrive
    on an NFNLGRP_NFTRACE socket (what `--rules` stands on)."""
    import select
    import socket

    fix = "rule attribution (--rules) needs nf_tables tracing and libnftables: apt-get install nftables python3-nftables"
    try:
        from tracer.kernel.nft_table import libnftables, run
        from tracer.kernel.nft_trace import TraceEvent, TraceSocket

        with in_fresh_netns():
            from pyroute2 import IPRoute

            with IPRoute() as ipr:
                ipr.link("set", index=ipr.link_lookup(ifname="lo")[0], state="up")
            nft = libnftables()  # its netlink socket lives in this netns
            run(nft, "table inet tracer_doctor {\n chain out {\n type filter hook output priority -350; policy accept;\n"
                     " udp dport 9 meta nftrace set 1\n }\n}\n")
            traces = TraceSocket(rcvbuf=1 << 20)
            try:
                with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
                    udp.sendto(b"tracer doctor", ("127.0.0.1", 9))
                deadline = time.monotonic() + 2
                while time.monotonic() < deadline:
                    select.select([traces], [], [], 0.1)
                    got = [e for e in traces.read(time.monotonic_ns) if isinstance(e, TraceEvent) and e.table == "tracer_doctor"]
                    if got:
                        return Capability("nftables_trace", True, f"a marked packet's trace arrived ({got[0].chain}, "
                                          f"{got[0].type})", False, fix)
            finally:
                traces.close()
        return Capability("nftables_trace", False, "no trace event arrived for a marked packet", False, fix)
    except Exception as exc:
        return Capability("nftables_trace", False, f"nf_tables trace: {_err(exc)}", False, fix)


def probe_iptables_backend() -> Capability:
    """Docker's rules are nf_tables rules only with iptables' nf_tables backend."""
    from tracer.kernel.ruleset import iptables_state

    backend, detail = iptables_state()
    ok = backend == "nf_tables"
    why = detail if ok else f"{detail or 'unknown'}: rules there are invisible to nf_tables tracing"
    return Capability("iptables_nft", ok, why, False,
                      "rule attribution (--rules) needs iptables' nf_tables backend (update-alternatives --set iptables "
                      "/usr/sbin/iptables-nft, then restart dockerd so it re-creates its rules)")


def _compile_probe_module() -> tuple[object | None, Capability]:
    fix = "install BCC: apt-get install python3-bpfcc (scripts/setup.sh)"
    try:
        import bcc
    except ImportError as exc:
        return None, Capability("bcc", False, f"cannot import bcc: {exc}", True, fix)
    start = time.monotonic()
    try:
        module = bcc.BPF(text=PROBE_SRC.encode())
    except Exception as exc:
        return None, Capability("bcc", False, f"bcc {bcc.__version__} failed to compile: {_err(exc)}"[:200], True,
                                "check the headers row; run scripts/setup.sh")
    took = time.monotonic() - start
    return module, Capability("bcc", True, f"bcc {bcc.__version__}, probe module compiled in {took:.1f}s", True, fix)


def probe_program_cache() -> Capability:
    """Whether starts can skip the compile (tracer/kernel/program_cache.py)."""
    from tracer.kernel.program_cache import ProgramCache

    ok, detail = ProgramCache().describe()
    return Capability("program_cache", ok, detail, False,
                      "optional: unset TRACER_PROGRAM_CACHE, or make the directory root's alone (chmod 700), or remove it")


def run_probes(probe_docker: Callable[[], Capability] | None = None) -> Report:
    """Probe everything; leaves nothing attached or loaded. The Docker
    engine is probed above this layer (tracer/dockerd.py), its row given
    here in its place."""
    report = Report()
    add = report.capabilities.append
    add(probe_root())
    report.capabilities.extend(probe_mounts())
    add(probe_btf())
    headers = probe_headers()
    module, bcc_cap = (None, Capability("bcc", False, "skipped: no headers", True, headers.fix))
    if headers.ok:
        module, bcc_cap = _compile_probe_module()
    add(headers)
    add(bcc_cap)
    add(probe_program_cache())
    try:
        report.capabilities.extend(probe_tracepoints(module, f"needs BCC: {bcc_cap.detail}"))
        add(probe_ringbuf())
        tcx = probe_tcx(module)
        clsact = probe_clsact(module)
        add(tcx)
        add(clsact)
        add(Capability("tc", tcx.ok or clsact.ok, "tcx" if tcx.ok else ("clsact" if clsact.ok else "neither tcx nor clsact"),
                       True, tcx.fix if not clsact.ok else ""))
        add(probe_netfilter(module))
        add(probe_kprobes(module))
        add(probe_fentry())
    finally:
        if module is not None:
            module.cleanup()  # detaches anything BCC attached and closes its program fds
    if probe_docker is not None:
        add(probe_docker())
    add(probe_nftables_trace())
    add(probe_iptables_backend())
    return report

"""Drop sensor: raw tracepoint skb:kfree_skb, reporting drops of traced
packets (known to the packet cache by fingerprint) with the kernel's drop
reason."""

from __future__ import annotations

import re
from pathlib import Path

from tracer.kernel.bpf_syscall import BPF_PROG_TYPE_RAW_TRACEPOINT  # what BCC's attach_raw_tracepoint loads
from tracer.sensors.base import Sensor

FORMAT_FILE = Path("/sys/kernel/tracing/events/skb/kfree_skb/format")
_SYMBOL = re.compile(r"\{\s*(\d+)\s*,\s*\"(\w+)\"\s*\}")


def parse_drop_reasons(format_text: str) -> dict[int, str]:
    """Reason names from the tracepoint's print fmt (__print_symbolic list)."""
    return {int(num): name for num, name in _SYMBOL.findall(format_text)}


def drop_reasons() -> dict[int, str]:
    """Names read at run time: the numbering changes between kernels."""
    try:
        reasons = parse_drop_reasons(FORMAT_FILE.read_text())
    except OSError:
        reasons = {}
    if not reasons:
        from tracer.kernel.btf import kernel_btf

        prefix = "SKB_DROP_REASON_"
        reasons = {v: k[len(prefix):] for k, v in kernel_btf().enum_values("skb_drop_reason").items() if k.startswith(prefix)}
    return reasons


class DropSensor(Sensor):
    name = "drop"
    source_file = "drops.c"
    needs = ("raw_tracepoints",)  # skb:kfree_skb
    tracepoint = "kfree_skb"

    def __init__(self) -> None:
        self.reasons = drop_reasons()
        self.attached = False

    def offsets(self):
        return {
            "OFF_SKB_DEV": ("sk_buff", "dev", 8),
            "OFF_DEV_ND_NET": ("net_device", "nd_net.net", 8),
        }

    def cflags(self):
        # kfree_skb with SKB_CONSUMED is a normal free, not a drop. Newer
        # kernels leave it out of the tracepoint's symbol list: ask BTF.
        consumed = next((num for num, name in self.reasons.items() if name == "CONSUMED"), None)
        if consumed is None:
            from tracer.kernel.btf import resolve_enum_value

            consumed = resolve_enum_value("skb_drop_reason", "SKB_CONSUMED", 0xFFFFFFFF)
        return [f"-DDROP_REASON_CONSUMED={consumed}"]

    def programs(self):
        return [("trc_drop", BPF_PROG_TYPE_RAW_TRACEPOINT, -1)]

    def attach(self, bpf) -> None:
        bpf.attach_raw_tracepoint(tp=self.tracepoint, fn_name="trc_drop")
        self.bpf = bpf
        self.attached = True

    def detach(self) -> None:
        if self.attached:
            self.bpf.detach_raw_tracepoint(tp=self.tracepoint)
            self.attached = False

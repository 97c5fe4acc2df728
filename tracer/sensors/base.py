"""What every sensor provides: its BPF source, the BTF offsets and flags it
needs, and attach/detach. Adding a sensor does not touch the others."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Mapping


class Sensor(ABC):
    name: str
    source_file: str  # under bpf/
    # What it cannot attach without: `tracer doctor`'s capability names
    # (tracer/kernel/probes.py). Doctor asks the sensors (tracer/sensors/all.py).
    needs: tuple[str, ...] = ()
    # Tracing goes on without it (the proxy sensor: only where docker-proxy runs).
    optional: bool = False

    @classmethod
    def missing(cls, have: Mapping[str, bool]) -> list[str]:
        """The capabilities it needs that ``have`` (name -> ok) lacks."""
        return [name for name in cls.needs if not have.get(name, False)]

    def offsets(self) -> dict[str, tuple[str, str, int]]:
        """Extra BTF offsets: macro -> (struct, member path, bytes the C reads)."""
        return {}

    def cflags(self) -> list[str]:
        return []

    def programs(self) -> list[tuple[str, int, int]]:
        """The programs attach() loads: (function, BPF program type, attach
        type or -1). The session has the kernel verify them all at once,
        in parallel, before attaching (tracer/kernel/program.py
        load_programs); attach() then finds them loaded."""
        return []

    def variants(self) -> dict[str, tuple[str, int]]:
        """Programs that are one compiled body with a value written in at
        load (bpf/common.h trc_param, built with -DTRC_SHARED_ENTRIES):
        program name -> (body function, value). Loaders that patch
        (tracer/kernel/cached_module.py) take them; BCC's own compile has
        each program as its own function instead."""
        return {}

    @abstractmethod
    def attach(self, bpf) -> None:
        """Load this sensor's programs from the compiled module and attach them."""

    @abstractmethod
    def detach(self) -> None:
        """Remove every attachment; must be safe to call twice."""


def load_program(bpf, name: str, prog_type: int, attach_type: int = -1):
    """``bpf.load_func`` with the kernel's refusal as one clear error: BCC
    (and CachedModule, which follows it) raise a bare Exception, which would
    reach the user as a traceback."""
    from tracer.errors import MissingCapability  # noqa: PLC0415

    try:
        return bpf.load_func(name, prog_type, attach_type=attach_type)
    except Exception as exc:  # noqa: BLE001 - BCC's bare Exception: the verifier's refusal
        raise MissingCapability(f"BPF program {name} not loaded: {str(exc).strip()[:500]}") from None

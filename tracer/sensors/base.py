"""What every sensor provides: its BPF source, the BTF offsets and flags it
needs, and attach/detach. Adding a sensor does not touch the others."""

from __future__ import annotations

from abc import ABC, abstractmethod


class Sensor(ABC):
    name: str
    source_file: str  # under bpf/

    def offsets(self) -> dict[str, tuple[str, str, int]]:
        """Extra BTF offsets: macro -> (struct, member path, bytes the C reads)."""
        return {}

    def cflags(self) -> list[str]:
        return []

    @abstractmethod
    def attach(self, bpf) -> None:
        """Load this sensor's programs from the compiled module and attach them."""

    @abstractmethod
    def detach(self) -> None:
        """Remove every attachment; must be safe to call twice."""

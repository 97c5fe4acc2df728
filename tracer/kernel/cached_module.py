"""A compiled module rebuilt from the program cache, without BCC's compiler.

It creates the maps as BCC had them, writes their fds into the programs'
map loads and has the kernel load the programs on demand. A program may be a
variant of a shared body (``variants``: name -> (body, value)): the body's
instructions with the value in its parameter slots (program_cache.patch),
loaded under the program's own name. The filter's values (``values``: its
port, protocol, sample rate) go into every program's value slots. It answers the
part of bcc.BPF's interface this project uses (``module[name]`` for maps,
``load_func``, ``attach_raw_tracepoint``/``detach_raw_tracepoint``,
``cleanup``), so the sensors and the session take either.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from typing import Mapping

from tracer.kernel import bpf_syscall as sc
from tracer.kernel.map_table import MapTable, ctype_of_json
from tracer.kernel.program_cache import Compiled, ProgramSpec, patch


@dataclass(frozen=True)
class Function:
    """A loaded program, as bcc.BPF.Function (``name``, ``fd``)."""

    name: bytes
    fd: int


def _text(name) -> str:
    return name.decode() if isinstance(name, bytes) else str(name)


class CachedModule:
    def __init__(self, compiled: Compiled, variants: Mapping[str, tuple[str, int]] | None = None,
                 values: Mapping[str, int] | None = None) -> None:
        self.compiled = compiled
        self.variants = dict(variants or {})
        self.values = dict(values or {})  # the filter's values, for the programs' value slots
        self.map_fds: dict[str, int] = {}
        self.tables: dict[str, MapTable] = {}
        self.funcs: dict[bytes, Function] = {}
        self.raw_tracepoint_fds: dict[bytes, int] = {}
        self.verifier_logs: dict[str, str] = {}  # a refused program's name -> the verifier's whole log
        self._lock = threading.Lock()
        try:
            for spec in compiled.maps:
                self.map_fds[spec.name] = sc.map_create(spec.type, spec.key_size, spec.value_size, spec.max_entries,
                                                        spec.name.encode(), spec.flags)
        except BaseException:
            self.cleanup()
            raise

    # ---- maps ------------------------------------------------------------------
    def __getitem__(self, name) -> MapTable:
        name = _text(name)
        with self._lock:
            if name not in self.tables:
                spec = next((m for m in self.compiled.maps if m.name == name), None)
                if spec is None:
                    raise KeyError(name)
                key_type = ctype_of_json(spec.key_desc) if spec.key_desc else None
                self.tables[name] = MapTable(name, self.map_fds[name], spec.type, spec.max_entries, key_type,
                                             ctype_of_json(spec.leaf_desc))
            return self.tables[name]

    # ---- programs ----------------------------------------------------------------
    def _spec(self, name) -> tuple[ProgramSpec | None, int | None]:
        """The compiled function behind a program's name, and its value if
        it is a variant of a shared body."""
        body, value = self.variants.get(_text(name), (_text(name), None))
        return self.compiled.program(body), value

    def function_size(self, name) -> int:
        spec, _ = self._spec(name)
        return len(spec.insns) if spec else 0

    def patched(self, name) -> bytes:
        """The program's instructions with this module's map fds (its
        value, for a variant, and the filter's values) in them."""
        spec, value = self._spec(name)
        if spec is None:
            raise Exception(f"Unknown program {_text(name)}")  # as BCC says it
        try:
            return patch(spec, [self.map_fds[m.name] for m in self.compiled.maps], value, self.values)
        except ValueError as exc:
            raise Exception(f"Cannot load BPF program {_text(name)}: {exc}") from None

    def load_func(self, name, prog_type: int, device=None, attach_type: int = -1) -> Function:
        """Load (once) and return the program; a refusal raises Exception
        with the verifier's last lines, as BCC's load_func does (its whole
        log kept in ``verifier_logs``)."""
        key = name if isinstance(name, bytes) else str(name).encode()
        with self._lock:
            if key in self.funcs:
                return self.funcs[key]
        insns = self.patched(key)
        try:
            fd = sc.prog_load(prog_type, insns, self.compiled.license, key[:15], max(attach_type, 0),
                              self.compiled.kern_version)
        except OSError as exc:
            if isinstance(exc, sc.ProgramRefused):
                with self._lock:
                    self.verifier_logs[key.decode()] = exc.log
            raise Exception(f"Failed to load BPF program {key.decode()}: {exc.strerror}") from None
        with self._lock:
            if key in self.funcs:  # loaded meanwhile by another thread: keep one
                os.close(fd)
            else:
                self.funcs[key] = Function(key, fd)
            return self.funcs[key]

    def attach_raw_tracepoint(self, tp=b"", fn_name=b"") -> "CachedModule":
        tp = tp if isinstance(tp, bytes) else str(tp).encode()
        if tp in self.raw_tracepoint_fds:
            raise Exception(f"Raw tracepoint {tp!r} has been attached")
        fn = self.load_func(fn_name, sc.BPF_PROG_TYPE_RAW_TRACEPOINT)
        try:
            self.raw_tracepoint_fds[tp] = sc.raw_tracepoint_open(tp, fn.fd)
        except OSError as exc:
            raise Exception(f"Failed to attach BPF to raw tracepoint: {exc.strerror}") from None
        return self

    def detach_raw_tracepoint(self, tp=b"") -> None:
        tp = tp if isinstance(tp, bytes) else str(tp).encode()
        if tp not in self.raw_tracepoint_fds:
            raise Exception(f"Raw tracepoint {tp!r} is not attached")
        os.close(self.raw_tracepoint_fds.pop(tp))

    # ---- teardown ------------------------------------------------------------------
    def cleanup(self) -> None:
        """Detach, unload and free everything (safe to call twice)."""
        for fds in (self.raw_tracepoint_fds, self.funcs, self.map_fds):
            for key in list(fds):
                value = fds.pop(key)
                try:
                    os.close(value.fd if isinstance(value, Function) else value)
                except OSError:
                    pass
        self.tables.clear()

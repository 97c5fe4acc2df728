"""BCC's compile of one C source, as every build of tracer's does it: the
header tree ensured (headers.py), clang's chatter on fd 2 kept out of the
terminal but kept to explain a failure (stderr_fd.py), /proc/kallsyms
answered so BCC does not parse the real one (bcc_kallsyms.py), and a
compile error given as one line naming clang's first error.

Light on imports (no numpy, no events): a compile unit's child interpreter
(tracer/kernel/compile_units.py) imports only this and the program cache."""

from __future__ import annotations

from tracer.errors import MissingCapability
from tracer.kernel import program_cache
from tracer.kernel.bcc_kallsyms import call_answered
from tracer.kernel.headers import ensure_bcc_headers
from tracer.kernel.stderr_fd import captured_stderr, first_clang_error


def compile_text(text: str, cflags: list[str]):
    """The bcc.BPF object (maps created, programs not loaded) for ``text``."""
    ensure_bcc_headers()
    from bcc import BPF  # noqa: PLC0415 - heavy import, only when compiling

    with captured_stderr() as captured:
        try:
            return call_answered(program_cache.bcc_version(), lambda: BPF(text=text, cflags=cflags))
        except Exception as exc:  # BCC raises bare Exception on compile errors
            first_error = first_clang_error(captured.text()) or str(exc)
            raise MissingCapability(f"BPF compile failed: {first_error.strip()}") from None

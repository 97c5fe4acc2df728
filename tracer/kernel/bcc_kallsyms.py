"""BCC's one question to /proc/kallsyms answered without reading it.

Every BCC compile (0.26: b_frontend_action.cc, check_bpf_probe_read_kernel)
reads all of /proc/kallsyms (~120,000 symbols, ~5 MB, formatted by the
kernel line by line, then put into a hash table) only to learn whether
``bpf_probe_read_kernel`` exists, to choose it over the older
``bpf_probe_read``: 0.1-0.25 s of CPU a compile, more than clang's whole
front end, on a cold start's critical path. The answer is known: tracer's
own programs call ``bpf_probe_read_kernel`` (bpf/), so a kernel without it
cannot run them anyway. So the compiling thread gets a mount namespace of
its own (private: nothing propagates to the host's) in which
/proc/kallsyms is a one-line file saying the symbol exists (BCC checks
that it is listed, never its address): a thread made for the compile,
which ends with it. BCC compiles the same instructions
(tests/e2e/test_bcc_kallsyms.py).

Only for the BCC versions known to ask nothing else of the file
(KNOWN_BCC): with another, or TRACER_BCC_KALLSYMS=0, BCC reads the real
one, as it always did. Best
effort: where the namespace or the mount cannot be made (no
CAP_SYS_ADMIN, a seccomp filter), BCC reads the real file.
"""

from __future__ import annotations

import ctypes
import logging
import os
import tempfile
import threading
from typing import Callable, TypeVar

log = logging.getLogger(__name__)
T = TypeVar("T")

# What BCC 0.26's compile looks up in /proc/kallsyms: bpf_probe_read_kernel
# always, bpf_probe_read_user only for C that calls bpf_probe_read_user,
# which tracer's does not. An address BCC keeps (non-zero, in the kernel's
# half): it only checks that the name is listed.
ANSWER = "ffffffff81000000 T bpf_probe_read_kernel\n"
KNOWN_BCC = ("0.26.",)

CLONE_FS = 0x00000200
CLONE_NEWNS = 0x00020000
MS_BIND = 0x1000
MS_REC = 0x4000
MS_PRIVATE = 1 << 18


def known(bcc_version: str) -> bool:
    """Whether this BCC's compile asks /proc/kallsyms only what ANSWER says
    (TRACER_BCC_KALLSYMS=0: let it read the real file, for measurements)."""
    return (bcc_version + ".").startswith(KNOWN_BCC) and os.environ.get("TRACER_BCC_KALLSYMS") != "0"


def call_answered(bcc_version: str, compile_: Callable[[], T]) -> T:
    """``compile_()`` (BCC's compile) run on a thread of its own that sees
    /proc/kallsyms as ANSWER, its result returned or its exception raised
    here. A thread of its own, which ends with the compile: it leaves the
    filesystem and mount namespaces it shares with the process's other
    threads, and nothing brings it back (setns into the host's namespace
    would also move its working directory to /)."""
    if not known(bcc_version):
        return compile_()
    done: dict[str, object] = {}

    def run() -> None:
        try:
            done["answered"] = _answer_in_this_thread()
            done["value"] = compile_()
        except BaseException as exc:  # noqa: BLE001 - raised again in the caller's thread
            done["error"] = exc

    thread = threading.Thread(target=run, name="bpf-compile", daemon=True)
    thread.start()
    thread.join()
    if "error" in done:
        raise done["error"]  # type: ignore[misc]
    return done["value"]  # type: ignore[return-value]


def _answer_in_this_thread() -> bool:
    """This thread in a mount namespace of its own (private: nothing
    propagates to the host's), ANSWER bind-mounted over /proc/kallsyms.
    Best effort: False where it cannot be (BCC reads the real file)."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_void_p]
    # CLONE_FS too: a thread sharing its filesystem namespace (cwd, root)
    # with others may not take a mount namespace of its own.
    if libc.unshare(CLONE_FS | CLONE_NEWNS) != 0:
        log.debug("kallsyms not answered: unshare: %s", os.strerror(ctypes.get_errno()))
        return False
    if libc.mount(None, b"/", None, MS_REC | MS_PRIVATE, None) != 0:
        log.debug("kallsyms not answered: private mounts: %s", os.strerror(ctypes.get_errno()))
        return False
    fd, path = tempfile.mkstemp(prefix="tracer-kallsyms-")
    try:
        os.write(fd, ANSWER.encode())
        if libc.mount(path.encode(), b"/proc/kallsyms", None, MS_BIND, None) != 0:
            log.debug("kallsyms not answered: bind: %s", os.strerror(ctypes.get_errno()))
            return False
        return True
    finally:
        os.close(fd)
        os.unlink(path)

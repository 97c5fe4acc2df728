"""fd 2 pointed at another file for a block: libbcc and clang print there
from C (header warnings, a refused program's verifier log), past
sys.stderr, so only the descriptor itself can be redirected."""

from __future__ import annotations

import os


class stderr_to:
    """fd 2 writes to ``fd`` inside the block, and to what it wrote to before after it."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.saved: int | None = None

    def __enter__(self) -> stderr_to:
        self.saved = os.dup(2)
        os.dup2(self.fd, 2)
        return self

    def __exit__(self, *exc) -> bool:
        if self.saved is not None:
            os.dup2(self.saved, 2)
            os.close(self.saved)
            self.saved = None
        return False

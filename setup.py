"""Only the compiled part of the package (everything else is in
pyproject.toml): tracer._native, the hot loops of a live run (native/).
optional=True: where it cannot be built (no compiler, no Python headers)
the install goes on and tracer uses its Python twins (tracer/native.py)."""

import hashlib
from glob import glob
from pathlib import Path

from setuptools import Extension, setup


def sources_hash(directory: Path) -> str:
    """The hash of native/'s sources (tracer/native.py computes the same,
    to tell a build from older sources)."""
    h = hashlib.sha256()
    for path in sorted(directory.glob("*.[ch]")):
        h.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()


setup(
    ext_modules=[
        Extension(
            "tracer._native",
            sources=sorted(glob("native/*.c")),
            depends=sorted(glob("native/*.h")),
            define_macros=[("TRACER_NATIVE_SOURCES", f'"{sources_hash(Path(__file__).parent / "native")}"')],
            extra_compile_args=["-O2", "-std=c11", "-Wall", "-Wextra", "-Wno-missing-field-initializers"],
            optional=True,
        )
    ]
)

"""Only the compiled part of the package (everything else is in
pyproject.toml): tracer._native, the hot loops of a live run (native/).
optional=True: where it cannot be built (no compiler, no Python headers)
the install goes on and tracer uses its Python twins (tracer/native.py)."""

import importlib.util
from glob import glob
from pathlib import Path

from setuptools import Extension, setup


def sources_hash(directory: Path) -> str:
    """tracer/native.py's hash of native/'s sources (loaded from its file:
    the package is not importable while it is being built), which it
    compares with the one baked in here to tell a build from older sources."""
    spec = importlib.util.spec_from_file_location("tracer_native_loader", Path(__file__).parent / "tracer" / "native.py")
    loader = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(loader)
    return loader.sources_hash(directory)


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

"""Only the compiled part of the package (everything else is in
pyproject.toml): tracer._native, the hot loops of a live run (native/).
optional=True: where it cannot be built (no compiler, no Python headers)
the install goes on and tracer uses its Python twins (tracer/native.py)."""

from glob import glob

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "tracer._native",
            sources=sorted(glob("native/*.c")),
            depends=sorted(glob("native/*.h")),
            extra_compile_args=["-O2", "-std=c11", "-Wall", "-Wextra", "-Wno-missing-field-initializers"],
            optional=True,
        )
    ]
)

"""The project's rule for small modules: no Python module of tracer/,
scripts/ or tests/ is over 600 lines (split one by job before it gets there)."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
MAX_LINES = 600


def test_no_module_is_over_600_lines():
    paths = [p for top in ("tracer", "scripts", "tests") for p in sorted((REPO / top).rglob("*.py"))]
    assert len(paths) > 100  # the tree was found
    sizes = {p.relative_to(REPO).as_posix(): len(p.read_text().splitlines()) for p in paths}
    assert {name: n for name, n in sizes.items() if n > MAX_LINES} == {}

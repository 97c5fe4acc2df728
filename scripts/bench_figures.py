"""What every benchmark here prints and how it runs another tree: medians
with a bootstrap 95 % interval, medians of per-round ratios, the load
average (the machine is shared: figures say how busy it was), and the
environment that runs a given tree's tracer."""

from __future__ import annotations

import os
import statistics
from pathlib import Path


def bootstrap_median(values: list[float], n: int = 4000, seed: int = 7) -> tuple[float, float]:
    """95 % bootstrap interval of the median of `values`."""
    import numpy as np

    v = np.asarray(values, dtype=float)
    if len(v) < 2:
        return float(v[0]), float(v[0])
    rng = np.random.default_rng(seed)
    meds = np.median(v[rng.integers(0, len(v), size=(n, len(v)))], axis=1)
    return float(np.percentile(meds, 2.5)), float(np.percentile(meds, 97.5))


def median_interval(values: list[float | None], unit: str = "s", digits: int = 2) -> str:
    """'median unit [low-high]' of the values measured (None: a round that
    measured nothing, left out); 'n/a' without any."""
    got = [v for v in values if v is not None]
    if not got:
        return "n/a"
    lo, hi = bootstrap_median(got)
    unit = f" {unit}" if unit else ""
    return f"{statistics.median(got):.{digits}f}{unit} [{lo:.{digits}f}-{hi:.{digits}f}]"


def round_ratios(this: list[float | None], base: list[float | None]) -> list[float]:
    """this / base of each round both measured (a zero base left out)."""
    return [t / b for t, b in zip(this, base) if t is not None and b]


def ratio_interval(this: list[float | None], base: list[float | None], digits: int = 3) -> str:
    """'median [low-high]' of the per-round ratios this / base; 'n/a' without any."""
    got = round_ratios(this, base)
    if not got:
        return "n/a"
    lo, hi = bootstrap_median(got)
    return f"{statistics.median(got):.{digits}f} [{lo:.{digits}f}-{hi:.{digits}f}]"


def load_average() -> str:
    """The 1, 5 and 15 minute load averages, as 'a/b/c'."""
    return "/".join(f"{x:.1f}" for x in os.getloadavg())


def tree_env(tree: Path, environ: dict | None = None) -> dict[str, str]:
    """The environment that runs ``tree``'s tracer: the tree first on
    PYTHONPATH, the caller's own PYTHONPATH (extra modules) still after it."""
    environ = dict(os.environ if environ is None else environ)
    environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(tree), environ.get("PYTHONPATH")) if p)
    return environ

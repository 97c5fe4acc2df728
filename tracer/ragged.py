"""Positions in ragged lists: lists laid out back to back in one array, as
a journey record's hops and a capture's list columns are, each list given
by its size (and, where it is not right after the one before, its start)."""

from __future__ import annotations

import numpy as np


def positions(sizes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each element's list and its position in it, list after list."""
    sizes = sizes.astype(np.int64)
    owner = np.repeat(np.arange(len(sizes)), sizes)
    first = np.cumsum(sizes) - sizes
    return owner, np.arange(len(owner)) - first[owner]


def ranges(starts: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """The indices ``starts[i]`` .. ``starts[i] + sizes[i] - 1``, list after
    list: where each list's elements are, gathered in one take."""
    sizes = sizes.astype(np.int64)
    return np.repeat(starts.astype(np.int64) - (np.cumsum(sizes) - sizes), sizes) + np.arange(int(sizes.sum()))

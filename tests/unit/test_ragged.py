"""Positions in ragged lists (tracer/ragged.py)."""

import numpy as np

from tracer.ragged import positions, ranges


def test_positions_name_each_elements_list_and_place():
    owner, at = positions(np.array([2, 0, 3]))
    assert owner.tolist() == [0, 0, 2, 2, 2] and at.tolist() == [0, 1, 0, 1, 2]
    owner, at = positions(np.zeros(0, np.int64))
    assert len(owner) == len(at) == 0


def test_ranges_gather_lists_wherever_they_start():
    assert ranges(np.array([10, 4, 7]), np.array([2, 0, 3])).tolist() == [10, 11, 7, 8, 9]
    assert ranges(np.array([5, 5]), np.array([1, 1])).tolist() == [5, 5]  # a list taken twice
    assert ranges(np.zeros(0, np.int64), np.zeros(0, np.int64)).tolist() == []

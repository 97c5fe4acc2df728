"""Distinct values as small ints, in the order first seen: one id space
shared across a capture's files, chunks or a batch's texts."""

from __future__ import annotations

from typing import Generic, Hashable, TypeVar

T = TypeVar("T", bound=Hashable)


class Interner(Generic[T]):
    """``values[i]`` is the value of id ``i``; ids only grow."""

    def __init__(self) -> None:
        self.values: list[T] = []
        self._ids: dict[T, int] = {}

    def id_of(self, value: T) -> int:
        i = self._ids.get(value)
        if i is None:
            i = self._ids[value] = len(self.values)
            self.values.append(value)
        return i

    def __len__(self) -> int:
        return len(self.values)

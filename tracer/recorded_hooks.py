"""The hook profiles a capture's files were recorded with, kept per file.

Each file's metadata says its profile (``hooks``) and the hops that profile
leaves out that were attached anyway (``hooks_kept``, docs/capture-format.md).
The profile drops are placed by and the hops kept come from these values; the
text `stats`, the report and `show` print for files of several profiles
(capture/recordings.py hooks_of_all) is made from them and never read back:
a file's name could look like a profile.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

from tracer.sensors.hook_profile import DEFAULT, placed_by, with_kept


@dataclass(frozen=True)
class FileHooks:
    """One file's hook profile and the hops it kept beyond it."""

    path: str  # as given ("" for a capture known by its metadata alone)
    profile: str = DEFAULT  # its ``hooks``: "all" when absent (captures written before the key)
    kept: tuple[str, ...] = ()  # its ``hooks_kept``, one hop each: ("nf_prerouting/before",)

    @classmethod
    def of(cls, metadata: Mapping[str, str], path: str = "") -> FileHooks:
        text = metadata.get("hooks_kept")
        return cls(path, metadata.get("hooks", DEFAULT), tuple(k.strip() for k in text.split(",")) if text else ())

    @property
    def named(self) -> str:
        """As `stats` names it: ``lean + nf_prerouting/before``."""
        return with_kept(self.profile, self.kept)


@dataclass(frozen=True)
class RecordedHooks:
    """The hook profiles of the files read together, in the order given."""

    files: tuple[FileHooks, ...] = ()

    @classmethod
    def of_files(cls, file_metadata: Sequence[Mapping[str, str]], paths: Sequence[str]) -> RecordedHooks:
        return cls(tuple(FileHooks.of(meta, path) for meta, path in zip(file_metadata, paths)))

    @classmethod
    def of(cls, metadata: Mapping[str, str] | None) -> RecordedHooks:
        """One capture known by its metadata alone (an in-memory table's)."""
        return cls((FileHooks.of(metadata or {}),))

    @property
    def placing(self) -> str:
        """The profile the drops of all the files are placed by (placed_by)."""
        return placed_by(*(f.profile for f in self.files))

    @property
    def kept(self) -> tuple[str, ...]:
        """Every hop some file kept beyond its profile, once each, in file order."""
        return tuple(dict.fromkeys(hop for f in self.files for hop in f.kept))

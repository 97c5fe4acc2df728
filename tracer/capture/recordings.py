"""What files read together are: which of them go on from the file before
(the next part of one recording) and which start another recording (the
reader tells the packet window: tracer/packet_window.py), and the hook
profiles they were recorded with."""

from __future__ import annotations

import os

from tracer.sensors.hook_profile import named

# What one recording's files share (every part is opened with the same
# session's metadata; ktime_offset_ns is measured once a session, to the ns).
_RECORDING_KEYS = ("ktime_offset_ns", "host", "kernel", "command", "schema_version")


def next_part(before: dict[str, str], after: dict[str, str]) -> bool:
    """Whether the file of metadata ``after`` is the next part of the
    recording the file of ``before`` is a part of (a packet may go on from
    one to the other). Captures number their parts (``part``); older ones
    do not, but each part's start_time is when it was opened. The same
    file twice, a part read again or out of order, or another recording:
    not the next part."""
    if any(before.get(k) != after.get(k) for k in _RECORDING_KEYS):
        return False
    if "part" in before or "part" in after:
        try:
            return int(after["part"]) == int(before["part"]) + 1
        except (KeyError, ValueError):
            return False
    first, then = before.get("start_time"), after.get("start_time")
    return bool(first and then and first < then)


def hooks_of_all(file_metadata: list, paths: list[str]) -> dict:
    """The first file's metadata, whose ``hooks`` names every file's hook
    profile when they differ ("lean (a.arrows), all (b.arrows)"): a reader of
    the merged segments and drops knows some files lack hops by design."""
    first = file_metadata[0]
    by_profile: dict[str, list[str]] = {}
    for meta, path in zip(file_metadata, paths):
        by_profile.setdefault(named(meta), []).append(os.path.basename(path))
    if len(by_profile) < 2:
        return first
    merged = {**first, "hooks": ", ".join(f"{profile} ({', '.join(names)})" for profile, names in by_profile.items())}
    merged.pop("hooks_kept", None)  # each file's is in ``hooks`` now
    return merged

"""What files read together are: which of them go on from the file before
(the next part of one recording) and which start another recording (the
reader tells the packet window: tracer/packet_window.py), and how their
hook profiles are shown."""

from __future__ import annotations

import os

from tracer.recorded_hooks import RecordedHooks

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


def hooks_of_all(file_metadata: list, hooks: RecordedHooks) -> dict:
    """The first file's metadata, whose ``hooks`` names every file's hook
    profile when they differ ("lean (a.arrows), all (b.arrows)"): a reader of
    the merged segments and drops knows some files lack hops by design. Of
    one profile, ``hooks`` stays it and ``hooks_kept`` names the files that
    kept hops ("nf_prerouting/before (a.arrows)"). Text to show, made from
    ``hooks`` (the files' values): drops are placed by RecordedHooks.placing."""
    def by(key) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for f in hooks.files:
            out.setdefault(key(f), []).append(os.path.basename(f.path))
        return out

    first = file_metadata[0]
    if len(by_profile := by(lambda f: f.named)) < 2:
        return first
    if len(by(lambda f: f.profile)) == 1:
        kept = by(lambda f: ",".join(f.kept))  # as the recorder writes it
        return {**first, "hooks_kept": ", ".join(f"{k} ({', '.join(files)})" for k, files in kept.items() if k)}
    merged = {**first, "hooks": ", ".join(f"{profile} ({', '.join(files)})" for profile, files in by_profile.items())}
    merged.pop("hooks_kept", None)  # each file's is in ``hooks`` now
    return merged

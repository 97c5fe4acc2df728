"""The hook profile a capture's drops are placed by (hook_profile.placed_by, of
the files' profiles as the reader keeps them: recorded_hooks.RecordedHooks):
one rule for stats, report, show and export, lean if any file is (review S13A #1, #6)."""

from __future__ import annotations

import json

from click.testing import CliRunner

from tests.unit.test_lean_drop_place import LEAN_PLACE, _captures
from tracer.cli import cli
from tracer.sensors.hook_profile import drop_place, placed_by


def test_placed_by_is_lean_if_any_file_is():
    assert placed_by() == "all" and placed_by("all") == "all" and placed_by("lean") == "lean"
    assert placed_by("lean", "all") == "lean" and placed_by("all", "all", "lean") == "lean"
    assert placed_by("future") == "all" and placed_by("future", "all") == "all", "a profile this version does not know"
    assert drop_place(placed_by("all", "lean"), "nf_prerouting/after") == LEAN_PLACE


def test_stats_of_a_lean_and_a_full_file_places_the_lean_drop_after_prerouting(tmp_path):
    """Mixed files: any lean file's FORWARD drop is last seen at PREROUTING
    after NAT, so such a drop reads "after" it (true of every file's)."""
    full, lean = _captures(tmp_path)
    result = CliRunner().invoke(cli, ["stats", "--format", "json", "--section", "drops", str(full), str(lean)])
    assert result.exit_code == 0, result.output
    places = {d["last_seen"]: d["place"] for d in json.loads(result.output)["drops"]}
    assert places["nf_forward"] == "nf_forward" and places["nf_prerouting/after"] == LEAN_PLACE, places
    result = CliRunner().invoke(cli, ["stats", str(full), str(lean)])
    assert f"NETFILTER_DROP  {LEAN_PLACE}" in result.output, result.output

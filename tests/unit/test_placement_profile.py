"""The hook profile a capture's drops are placed by (hook_profile.placement_profile):
one reader of the metadata's ``hooks`` for stats, report, show and export, which
also knows the merged text of files of several profiles (review S13A #1, #6)."""

from __future__ import annotations

import json

from click.testing import CliRunner

from tests.unit.test_lean_drop_place import LEAN_PLACE, _captures
from tracer.cli import cli
from tracer.sensors.hook_profile import drop_place, placed_by, placement_profile


def test_placed_by_reads_one_profile_or_the_files_of_several():
    assert placement_profile({}) == "all" and placement_profile({"hooks": "lean"}) == "lean"
    assert placed_by("lean (a.arrows), all (b.arrows)") == "lean"
    assert placed_by("all (a.arrows), lean + nf_prerouting/before (b.arrows, c.arrows)") == "lean"
    assert placed_by("all (lean.arrows)") == "all", "a file's name is not its profile"
    assert placed_by("future") == "all"
    assert drop_place("all (b.arrows), lean (a.arrows)", "nf_prerouting/after") == LEAN_PLACE, "names lean, not the text"


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

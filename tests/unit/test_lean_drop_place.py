"""Where a drop is placed under --hooks lean (review S12B finding 1).

Lean has no FORWARD hop and no INPUT hop before NAT: a packet the filter
table drops in FORWARD or INPUT is last seen at PREROUTING after NAT.
`stats` and `report` say it was dropped after that hop, at hooks lean
does not trace, not at PREROUTING itself. The lab capture's rows with the
hops lean leaves out taken away are what a lean record of it holds.
"""

from __future__ import annotations

from click.testing import CliRunner

from tests.unit.analysis_data import METADATA, capture_table, lab_capture, write_capture
from tracer.cli import cli
from tracer.sensors.hook_profile import drop_place, left_out

LEAN_PLACE = "after nf_prerouting/after (FORWARD/INPUT not traced: --hooks lean)"


def test_drop_place_under_each_profile():
    assert drop_place("lean", "nf_prerouting/after") == LEAN_PLACE
    assert drop_place("all", "nf_prerouting/after") == "nf_prerouting/after"
    assert drop_place("lean", "tc_ingress@external") == "tc_ingress@external"  # lean keeps what comes next
    assert drop_place("future", "nf_prerouting/after") == "nf_prerouting/after"  # a profile this version does not know


def _captures(tmp_path):
    rows, _ = lab_capture()
    lean = [r for r in rows if not left_out("lean", r["hook"], r["nat_stage"], r["if_role"])]
    assert len(lean) < len(rows)
    return (write_capture(tmp_path / "full.arrows", capture_table(rows)),
            write_capture(tmp_path / "lean.arrows", capture_table(lean), {**METADATA, "hooks": "lean"}))


def test_stats_and_report_place_a_forward_drop_after_prerouting_under_lean(tmp_path):
    full, lean = _captures(tmp_path)
    runner = CliRunner()
    out = {}
    for name, cap in (("full", full), ("lean", lean)):
        result = runner.invoke(cli, ["stats", str(cap)])
        assert result.exit_code == 0, result.output
        out[name] = result.output
    assert "NETFILTER_DROP  nf_forward" in out["full"] and LEAN_PLACE not in out["full"], out["full"]
    assert f"NETFILTER_DROP  {LEAN_PLACE}" in out["lean"], out["lean"]
    assert "NETFILTER_DROP  nf_prerouting/after " not in out["lean"], out["lean"]
    html_out = tmp_path / "lean.html"
    result = runner.invoke(cli, ["report", str(lean), "-o", str(html_out)])
    assert result.exit_code == 0, result.output
    text = html_out.read_text()
    assert text.count("FORWARD/INPUT not traced: --hooks lean") >= 2, "the drops table and the path's drops"
    # The path picture: the note beside PREROUTING after NAT says the drop came after it.
    assert ">✕ 2 dropped after<" in text, "the path's note"
    result = runner.invoke(cli, ["report", str(full), "-o", str(tmp_path / "full.html")])
    assert ">✕ 2 dropped<" in (tmp_path / "full.html").read_text(), "beside nf_forward, as before"


def test_stats_of_captures_with_different_profiles_names_each_and_report_names_the_profile(tmp_path):
    """Review S12B finding 6: the first file's `hooks` stood for all of them."""
    full, lean = _captures(tmp_path)
    runner = CliRunner()
    for files, hooks in (([full, lean], "hooks all (full.arrows), lean (lean.arrows)"),
                         ([lean, full], "hooks lean (lean.arrows), all (full.arrows)")):
        result = runner.invoke(cli, ["stats", *map(str, files)])
        assert result.exit_code == 0, result.output
        assert result.output.splitlines()[0].endswith(hooks), result.output.splitlines()[0]
    result = runner.invoke(cli, ["stats", str(lean), str(lean)])
    assert result.output.splitlines()[0].endswith("hooks lean"), result.output.splitlines()[0]
    for cap, profile in ((lean, "lean"), (full, "all")):
        out = tmp_path / f"{profile}.html"
        result = runner.invoke(cli, ["report", str(cap), "-o", str(out)])
        assert result.exit_code == 0, result.output
        assert f"<b>hooks</b> {profile}" in out.read_text()


def test_show_summary_places_the_drop_under_lean(tmp_path):
    """The summary at the end of `show` (and of `trace`, from --hooks)."""
    full, lean = _captures(tmp_path)
    runner = CliRunner()
    out = {name: runner.invoke(cli, ["show", str(cap)]) for name, cap in (("full", full), ("lean", lean))}
    assert all(r.exit_code == 0 for r in out.values()), out
    assert "drop  NETFILTER_DROP ×2  last seen nf_forward" in out["full"].stderr, out["full"].stderr
    assert f"drop  NETFILTER_DROP ×2  {LEAN_PLACE}" in out["lean"].stderr, out["lean"].stderr
    # A replay says it is of a lean capture (its journeys lack hops by design), as `stats` does.
    summary = {name: next(line for line in r.stderr.splitlines() if line.startswith("summary")) for name, r in out.items()}
    assert summary["lean"].endswith(" unknown  hooks lean") and summary["full"].endswith(" unknown"), summary


def test_drop_place_words_a_drop_placed_where_last_seen_as_asked():
    assert drop_place("all", "nf_forward", "last seen nf_forward") == "last seen nf_forward"
    assert drop_place("lean", "nf_prerouting/after", "last seen nf_prerouting/after") == LEAN_PLACE
    assert drop_place("lean", "tc_ingress@external", "") == ""


def test_json_summary_and_stats_json_and_csv_place_the_drop_as_the_text_does(tmp_path):
    """`last_seen` stays the hop label (the stats JSON contract, and what the
    queries group by); `place` is the text's "last seen" column: under lean
    a FORWARD drop is after PREROUTING after NAT, as `stats` prints it."""
    import csv
    import io
    import json

    from tracer.capture.reader import open_capture, read_capture
    from tracer.journey_rows import journey_rows
    from tracer.render import Summary

    full, lean = _captures(tmp_path)
    runner = CliRunner()
    for cap, last_seen, place in ((full, "nf_forward", "nf_forward"), (lean, "nf_prerouting/after", LEAN_PLACE)):
        summary = Summary()
        summary.hooks = open_capture([str(cap)]).recorded_hooks.placing  # as `show` sets it
        summary.add_table(journey_rows(read_capture([str(cap)]).events))
        want = {"reason": "NETFILTER_DROP", "last_seen": last_seen, "place": place, "packets": 2}
        assert want in summary.to_dict()["drops"], summary.to_dict()["drops"]
        result = runner.invoke(cli, ["stats", "--format", "json", "--section", "drops", str(cap)])
        assert result.exit_code == 0, result.output
        assert want in json.loads(result.output)["drops"], result.output
        result = runner.invoke(cli, ["stats", "--format", "csv", "--section", "drops", str(cap)])
        assert result.output.splitlines()[0] == "reason,last_seen,packets,place", "place appended: positional readers keep packets third"
        assert {k: str(v) for k, v in want.items()} in list(csv.DictReader(io.StringIO(result.output))), result.output

"""The hook profiles of the files read together (tracer/recorded_hooks.py):
kept per file, so the profile drops are placed by and the hops kept come
from the files' values, and the text `stats`, the report and `show` print
(capture/recordings.py hooks_of_all) is made from them and never read back."""

from __future__ import annotations

from click.testing import CliRunner

from tests.unit.analysis_data import METADATA, capture_table, lab_capture, write_capture
from tests.unit.test_lean_drop_place import LEAN_PLACE
from tracer.capture.reader import open_capture
from tracer.capture.recordings import hooks_of_all
from tracer.cli import cli
from tracer.recorded_hooks import FileHooks, RecordedHooks
from tracer.sensors.hook_profile import left_out

LEAN = {**METADATA, "hooks": "lean"}
IFACE = {**LEAN, "hooks_kept": "nf_prerouting/before"}  # lean with --iface
FULL = {**METADATA, "hooks": "all"}


def shown(metas, paths):
    """The reader's two views of files: their values, and the metadata shown."""
    hooks = RecordedHooks.of_files(metas, paths)
    return hooks, hooks_of_all(metas, hooks)


def test_one_file_is_its_own_profile_and_metadata():
    hooks, meta = shown([IFACE], ["/d/a.arrows"])
    assert hooks.files == (FileHooks("/d/a.arrows", "lean", ("nf_prerouting/before",)),)
    assert (hooks.placing, hooks.kept) == ("lean", ("nf_prerouting/before",))
    assert meta is IFACE, "one file's metadata is shown as it is"
    assert RecordedHooks.of(FULL).placing == "all" and RecordedHooks.of(LEAN).placing == "lean"


def test_a_capture_without_hooks_is_every_hook():
    """Captures written before the keys: every hook, nothing kept, no key added."""
    hooks, meta = shown([METADATA, METADATA], ["a.arrows", "b.arrows"])
    assert "hooks" not in METADATA and meta is METADATA
    assert hooks.files[0] == FileHooks("a.arrows", "all", ()) and (hooks.placing, hooks.kept) == ("all", ())
    assert RecordedHooks.of(None).placing == "all" and RecordedHooks().placing == "all"
    _, meta = shown([METADATA, LEAN], ["old.arrows", "new.arrows"])
    assert meta["hooks"] == "all (old.arrows), lean (new.arrows)"


def test_files_of_one_profile_stay_it_and_name_the_files_that_kept_hops():
    hooks, meta = shown([IFACE, LEAN, IFACE], ["x/iface.arrows", "plain.arrows", "more.arrows"])
    assert (hooks.placing, hooks.kept) == ("lean", ("nf_prerouting/before",)), "each hop once"
    assert meta["hooks"] == "lean" and meta["hooks_kept"] == "nf_prerouting/before (iface.arrows, more.arrows)"
    hooks, meta = shown([FULL, FULL], ["a.arrows", "b.arrows"])
    assert (hooks.placing, hooks.kept, meta) == ("all", (), FULL)


def test_mixed_files_are_placed_as_lean_and_each_named():
    hooks, meta = shown([FULL, IFACE, LEAN], ["full.arrows", "iface.arrows", "lean.arrows"])
    assert hooks.placing == "lean"
    assert meta["hooks"] == "all (full.arrows), lean + nf_prerouting/before (iface.arrows), lean (lean.arrows)"
    assert "hooks_kept" not in meta, "each file's is in hooks"
    # the shown text lost which hops were kept; the values did not
    assert hooks.kept == ("nf_prerouting/before",)


def test_a_file_name_that_reads_like_a_profile_places_nothing():
    """The text names the files; before, placement read it back with a regex,
    which took a name's ", lean (" for a lean file."""
    future = {**METADATA, "hooks": "future"}  # a profile this version does not know: placed as every hook
    hooks, meta = shown([FULL, future], ["a, all (b.arrows", "x), lean (y.arrows"])
    assert meta["hooks"] == "all (a, all (b.arrows), future (x), lean (y.arrows)", "the text as before"
    assert hooks.placing == "all", "no file is lean"
    hooks, meta = shown([LEAN, FULL], ["l, all (m.arrows", "nf_forward (q.arrows"])
    assert meta["hooks"] == "lean (l, all (m.arrows), all (nf_forward (q.arrows)"
    assert (hooks.placing, hooks.kept) == ("lean", ())


def test_the_reader_keeps_the_values_and_stats_shows_the_text(tmp_path):
    """End to end through `open_capture` and `stats`: files whose names read
    like profiles show the same text and drops are placed by the values."""
    rows, _ = lab_capture()
    lean = capture_table([r for r in rows if not left_out("lean", r["hook"], r["nat_stage"], r["if_role"])])
    full = write_capture(tmp_path / "a, lean (b.arrows", capture_table(rows), FULL)
    kept = write_capture(tmp_path / "k, all (j.arrows", lean, IFACE)
    stream = open_capture([str(full), str(kept)])
    assert stream.recorded_hooks.files == (FileHooks(str(full), "all", ()),
                                           FileHooks(str(kept), "lean", ("nf_prerouting/before",)))
    assert stream.metadata["hooks"] == "all (a, lean (b.arrows), lean + nf_prerouting/before (k, all (j.arrows)"
    out = CliRunner().invoke(cli, ["stats", str(full), str(kept)]).output
    assert out.splitlines()[0].endswith(f"hooks {stream.metadata['hooks']}"), out
    assert f"NETFILTER_DROP  {LEAN_PLACE}" in out, out
    shown_ = CliRunner().invoke(cli, ["show", str(full), str(kept)])
    summary = next(line for line in shown_.stderr.splitlines() if line.startswith("summary"))
    assert summary.endswith(f" unknown  hooks {stream.metadata['hooks']}"), summary
    assert f"drop  NETFILTER_DROP ×2  {LEAN_PLACE}" in shown_.stderr, shown_.stderr
    # a full file alone, its name notwithstanding, places the drop where it was seen
    out = CliRunner().invoke(cli, ["stats", str(full)]).output
    assert "NETFILTER_DROP  nf_forward" in out and LEAN_PLACE not in out, out


def test_export_at_notes_a_left_out_place_by_the_values(tmp_path):
    """`export --at` says a place the profile leaves out is why it matched
    nothing, by the placing profile and the hops kept of every file."""
    import pytest

    from tracer.errors import TracerError
    from tracer.pcapng import export_pcapng

    rows, _ = lab_capture()
    table = capture_table([r for r in rows if r["hook"] != "nf_forward" and r["nat_stage"] != "before"])

    def last_words(at, metas, paths):
        hooks, meta = shown(metas, paths)
        with pytest.raises(TracerError) as err:
            export_pcapng(table, tmp_path / "x.pcapng", meta, at=[at], hooks=hooks)
        return str(err.value).split(";")[0]

    fooling = ([FULL, {**METADATA, "hooks": "future"}], ["a.arrows", "x), lean (y.arrows"])
    assert last_words("nf_forward", *fooling) == "--at nf_forward: no sighting there", "no file is lean"
    assert last_words("nf_forward", [FULL, LEAN], ["a.arrows", "b.arrows"]) == \
        "--at nf_forward: no sighting there (recorded with --hooks lean, which leaves it out)"
    # a lean file kept PREROUTING before NAT (--iface): not said to be left out, of mixed files too
    assert last_words("nf_prerouting/before", [FULL, IFACE], ["a.arrows", "b.arrows"]) == \
        "--at nf_prerouting/before: no sighting there"
    assert last_words("nf_prerouting/before", [FULL, LEAN], ["a.arrows", "b.arrows"]) == \
        "--at nf_prerouting/before: no sighting there (recorded with --hooks lean, which leaves it out)"

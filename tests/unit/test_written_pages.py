"""A regular file's output written back and dropped from the page cache as
it grows (tracer/written_pages.py): which stretches, and that only regular
files are touched and their bytes stay as written."""

from __future__ import annotations

import errno
import io
import os
import random
import subprocess
import sys
import time

import pytest

from tracer.written_pages import WritebackPlan, WrittenPages, failure_line, in_steps


def test_a_stretch_is_written_back_once_a_step_long_and_dropped_one_call_later():
    plan = WritebackPlan(step=8, align=2)
    assert plan.advance(5) == (None, None)
    assert plan.advance(9) == ((0, 8), None)  # ends on the boundary below the written end
    assert plan.advance(15) == (None, None)  # 6 more: under a step
    assert plan.advance(17) == ((8, 8), (0, 8))
    assert plan.advance(41) == ((16, 24), (8, 8))
    assert plan.advance(41) == (None, None)


def test_an_offset_moved_back_starts_over_there():
    plan = WritebackPlan(start=7, step=8, align=2)  # an O_APPEND file with 7 bytes already: from the boundary below
    assert plan.advance(17) == ((6, 10), None)
    assert plan.advance(30) == ((16, 14), (6, 10))
    assert plan.advance(4) == (None, None)  # truncated under what was dropped
    assert plan.advance(12) == ((4, 8), None)


def test_the_stretches_cover_the_file_in_order_without_gaps():
    rng = random.Random(9)
    step, align = 8 << 20, 2 << 20
    plan = WritebackPlan(start=12345, step=step, align=align)
    written = 12345
    writes, drops = [], []
    for _ in range(2000):
        written += rng.choice((0, 1, 4096, 1 << 20, 3_000_001))
        write, drop = plan.advance(written)
        writes += [write] if write else []
        drops += [drop] if drop else []
    start = 12345 - 12345 % align
    for stretches in (writes, drops):
        ends = [start] + [off + length for off, length in stretches]
        assert [off for off, _ in stretches] == ends[:-1]  # each starts where the one before ended
        assert all(length >= step and off % align == 0 and length % align == 0 for off, length in stretches)
    assert drops == writes[: len(drops)] and len(drops) == len(writes) - 1  # all but the last written back are dropped
    assert writes[-1][0] + writes[-1][1] <= written


def test_a_disk_far_behind_is_waited_on_for_two_steps_at_most_and_every_call_is_a_step_at_most():
    rng = random.Random(5)
    step, align = 8, 2
    plan = WritebackPlan(step=step, align=align)
    written, writes, drops = 0, [], []
    for _ in range(2000):
        written += rng.choice((0, 3, 8, 40, 1000))  # now and then far ahead of the thread: a slow disk
        write, drop = plan.advance(written)
        writes += [write] if write else []
        drops += [drop] if drop else []
    assert any(length > 2 * step for _, length in writes)  # the case in question came up
    for drop, write in zip(drops, writes):
        assert drop[0] == write[0] and drop[1] == min(write[1], 2 * step)  # a long stretch's first two steps
    ends = [0] + [off + length for off, length in writes]
    assert [off for off, _ in writes] == ends[:-1]  # writeback still started for all of it
    for stretch in writes + drops:
        pieces = in_steps(stretch, step)
        assert all(0 < length <= step for _, length in pieces)
        assert pieces[0][0] == stretch[0] and [off for off, _ in pieces[1:]] == [o + n for o, n in pieces[:-1]]
        assert pieces[-1][0] + pieces[-1][1] == stretch[0] + stretch[1]


def test_only_regular_files(tmp_path):
    r, w = os.pipe()
    try:
        assert not WrittenPages(w).active
    finally:
        os.close(r)
        os.close(w)
    with open(os.devnull, "wb") as null:
        assert not WrittenPages(null.fileno()).active
    assert not WrittenPages.of(io.StringIO()).active  # no descriptor (a test's stdout)
    assert not WrittenPages(-1).active
    with open(tmp_path / "out", "wb") as f:
        assert WrittenPages.of(f).active


def test_a_file_keeps_its_bytes_while_its_pages_are_written_back_and_dropped(tmp_path):
    path = tmp_path / "out.json"
    path.write_bytes(b"before\n")
    rng = random.Random(13)
    expected = bytearray(b"before\n")
    with open(path, "ab") as f:  # appended to, as `>>` does: the plan starts at the end
        pages = WrittenPages(f.fileno(), step=1 << 20)
        assert pages.active and pages.plan.dropped == 0
        deadline = time.monotonic() + 30
        # written until the thread has dropped a stretch (it runs a wake-up or more behind)
        while (pages.plan.dropped == 0 or len(expected) < (8 << 20)) and time.monotonic() < deadline:
            chunk = rng.randbytes(rng.randrange(1, 64 << 10))
            f.write(chunk)
            f.flush()
            expected += chunk
            pages.wrote()
        assert pages.plan.dropped > 0 and pages.active  # the calls were made, without an error
        pages.close()
    assert path.read_bytes() == expected


def test_the_disks_errors_are_told_and_a_file_system_without_the_calls_is_not():
    for quiet in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOTSUP, errno.ESPIPE, errno.EBADF):
        assert failure_line(OSError(quiet, os.strerror(quiet)), "/out.json") is None
    for told in (errno.EIO, errno.ENOSPC, errno.EDQUOT, errno.EROFS):
        assert failure_line(OSError(told, os.strerror(told)), "/out.json") == (
            f"tracer: writing the output file /out.json failed: {os.strerror(told)}; the output may be incomplete")


def test_a_descriptor_closed_under_the_thread_ends_it_without_a_word(tmp_path, capfd):
    fd = os.open(tmp_path / "out", os.O_WRONLY | os.O_CREAT)
    pages = WrittenPages(fd, step=1 << 20)
    os.write(fd, b"x" * (4 << 20))
    pages.position = os.lseek(fd, 0, os.SEEK_CUR)
    os.close(fd)  # the first call gets a real EBADF
    pages.wake.set()
    pages._run()  # the thread's loop, here: no race with the close
    assert pages.error.errno == errno.EBADF and not pages.active
    assert capfd.readouterr().err == ""


def test_under_the_shells_append_what_the_file_held_is_left_alone(tmp_path):
    path = tmp_path / "out.json"
    path.write_bytes(b"x" * (5 << 20) + b"before\n")
    fd = os.open(path, os.O_WRONLY | os.O_APPEND)  # as bash's `>>`: no seek, the offset 0 until the first write
    try:
        assert os.lseek(fd, 0, os.SEEK_CUR) == 0
        pages = WrittenPages(fd, step=1 << 20)
        assert pages.active and pages.plan.dropped == pages.plan.written_back == 4 << 20  # the 2 MiB boundary below
        assert pages.position == pages.noted == (5 << 20) + 7
    finally:
        os.close(fd)


def _resident(path) -> int:
    """Bytes of ``path`` in the page cache (util-linux fincore)."""
    done = subprocess.run(["fincore", "--bytes", "--noheadings", "--output", "RES", str(path)],
                          capture_output=True, text=True, check=True)
    return int(done.stdout.strip())


def test_the_written_pages_leave_the_cache(tmp_path):
    kind = subprocess.run(["stat", "-f", "-c", "%T", str(tmp_path)], capture_output=True, text=True).stdout.strip()
    if kind == "tmpfs":
        pytest.skip("tmpfs takes the calls and keeps its pages")
    path = tmp_path / "out.json"
    step = 1 << 20
    rng = random.Random(17)
    with open(path, "wb") as f:
        pages = WrittenPages(f.fileno(), step=step)
        # well under a second here; short, as the kernel evicts on its own given the time (13 s once)
        deadline = time.monotonic() + 5
        written = 0
        # Until the thread has dropped (not just the kernel evicted) all but
        # the last steps: a busy machine runs it late, and its plan only
        # moves on a wake-up a step of writing gives it (a suite run once
        # left the loop at 16 MiB written, 10 MiB dropped, the rest evicted
        # by the kernel meanwhile).
        while (written < (16 << 20) or _resident(path) > written - 4 * step
               or pages.plan.dropped < written - 4 * step):
            assert time.monotonic() < deadline, f"{_resident(path)} of {written} bytes still cached"
            chunk = rng.randbytes(64 << 10)
            f.write(chunk)
            f.flush()
            written += len(chunk)
            pages.wrote()
        pages.close()
        pages.join(10)
        assert not pages.thread.is_alive() and pages.error is None  # the calls made, none failed
        assert pages.plan.dropped >= written - 4 * step



def _eio():
    def call(fd, offset, length, flags):
        raise OSError(errno.EIO, os.strerror(errno.EIO))
    return call


def test_a_disks_error_is_told_once_and_marks_the_output_failed(tmp_path, capfd, monkeypatch):
    import tracer.written_pages as w

    monkeypatch.setattr(w, "_sync_file_range", _eio)  # the disk's answer to the writeback call
    monkeypatch.setattr(w, "told_failure", type(w.told_failure)())  # this test's own flag
    with open(tmp_path / "out", "wb") as f:
        pages = WrittenPages(f.fileno(), step=1 << 20)
        f.write(b"x" * (4 << 20))
        f.flush()
        pages.position = os.lseek(f.fileno(), 0, os.SEEK_CUR)
        pages.wake.set()
        pages._run()  # the thread's loop, here
    assert pages.error.errno == errno.EIO and not pages.active
    assert w.output_failed()
    assert capfd.readouterr().err == (f"tracer: writing the output file {tmp_path / 'out'} failed: "
                                      f"{os.strerror(errno.EIO)}; the output may be incomplete\n")


# `tracer show --json` in a process whose output file's writeback failed
# (told by WrittenPages' own loop, as above, on a file of its own: a
# capture this small is shown before the thread's first call): the command
# finishes its output and exits with status 1; with no failure, 0.
_SHOW_AFTER = """
import errno, os, sys
import tracer.written_pages as w
if sys.argv[2] == "failed":
    def eio():
        def call(fd, offset, length, flags):
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        return call
    w._sync_file_range = eio
    with open(sys.argv[3], "wb") as f:
        pages = w.WrittenPages(f.fileno(), step=1 << 20)
        f.write(b"x" * (2 << 20))
        f.flush()
        pages.position = os.lseek(f.fileno(), 0, os.SEEK_CUR)
        pages.wake.set()
        pages._run()
sys.argv = ["tracer", "show", "--json", sys.argv[1]]
from tracer.cli import main
main()
"""


@pytest.mark.parametrize("writeback", ["failed", "fine"])
def test_a_failed_writeback_makes_the_exit_status_1(tmp_path, writeback):
    root = os.path.join(os.path.dirname(__file__), "..", "..")
    capture = os.path.join(root, "tests", "data", "lab-http.arrows")
    whole = subprocess.run([sys.executable, "-m", "tracer", "show", "--json", capture], capture_output=True,
                           timeout=60, cwd=root)
    assert whole.returncode == 0 and whole.stdout
    with open(tmp_path / "out.json", "wb") as f:
        run = subprocess.run([sys.executable, "-c", _SHOW_AFTER, capture, writeback, str(tmp_path / "scratch")],
                             stdout=f, stderr=subprocess.PIPE, timeout=60, cwd=root)
    told = "failed: " + os.strerror(errno.EIO) + "; the output may be incomplete"
    assert run.returncode == (1 if writeback == "failed" else 0), run.stderr
    assert (told in run.stderr.decode()) == (writeback == "failed")
    assert b"Traceback" not in run.stderr
    assert (tmp_path / "out.json").read_bytes() == whole.stdout  # the output itself is whole

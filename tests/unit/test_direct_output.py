"""A regular file's output written with O_DIRECT (tracer/direct_output.py):
every byte as written, the partial block visible at once, stdout's offset
at the end, nothing left in the page cache, and the ordinary path wherever
direct writes cannot be exact."""

from __future__ import annotations

import errno
import os
import random
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.unit.test_written_pages import _resident
from tracer import allocator, direct_output
from tracer.allocator import QUIET_PASSES
from tracer.direct_output import BLOCK, STAGE, DirectOutput
from tracer.output import Reader

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def disk_dir(tmp_path):
    """A directory on a disk-backed file system (tmpfs is all page cache)."""
    kind = subprocess.run(["stat", "-f", "-c", "%T", str(tmp_path)], capture_output=True, text=True).stdout.strip()
    if kind != "tmpfs":
        yield tmp_path
        return
    where = REPO / f".test-direct-{os.getpid()}"
    where.mkdir()
    try:
        yield where
    finally:
        shutil.rmtree(where)


def _chunks(seed: int, total: int) -> list[bytes]:
    rng = random.Random(seed)
    out, size = [], 0
    while size < total:
        n = rng.choice([1, 17, BLOCK - 1, BLOCK, BLOCK + 1, 65_537, 1_000_003])
        out.append(bytes(rng.getrandbits(8) for _ in range(min(n, 64))) * (n // 64 + 1))
        out[-1] = out[-1][:n]
        size += n
    return out


def test_every_byte_as_written_and_visible_at_once(disk_dir):
    path = disk_dir / "out"
    with open(path, "wb") as f:
        direct = DirectOutput.for_fd(f.fileno())
        assert direct is not None and direct.active
        written = b""
        for chunk in _chunks(1, 6 << 20):
            assert direct.write(chunk)
            written += chunk
            # the partial block too: a reader of the file sees every line written so far
            assert os.fstat(f.fileno()).st_size == len(written)
            assert os.lseek(f.fileno(), 0, os.SEEK_CUR) == len(written)  # stdout's offset at the end
        direct.close()
    assert path.read_bytes() == written


def test_nothing_stays_in_the_page_cache(disk_dir):
    path = disk_dir / "out"
    with open(path, "wb") as f:
        direct = DirectOutput.for_fd(f.fileno())
        for _ in range(24):
            assert direct.write(b"x" * 999_999)
        direct.close()
        assert path.stat().st_size == 24 * 999_999
        assert _resident(path) <= BLOCK  # the last partial block, written the ordinary way


def _put_in_stage(direct: DirectOutput, n: int, bound: int, fill: bytes) -> bytes:
    """What a writer does: the stage made ``bound`` bytes long past ``at``,
    ``n`` bytes of ``fill`` put there, that view written; the bytes."""
    direct.ensure(direct.at + bound)
    text = fill * n
    view = memoryview(direct.buffer)[direct.at:direct.at + n]
    view[:] = text
    assert direct.write(view)
    del view
    return text


def test_text_put_in_the_stage_is_written_from_there(disk_dir, monkeypatch):
    """journey_json_text writes into ``buffer`` at ``at`` (after the partial
    block kept there) and hands a view of it: the same bytes on disk,
    without a copy; a stage too small is grown keeping what it holds."""
    path = disk_dir / "out"
    with open(path, "wb") as f:
        direct = DirectOutput.for_fd(f.fileno())
        written = b""
        for n in (5000, 3 * STAGE // 2, 100, 2 * BLOCK):
            written += _put_in_stage(direct, n, n, bytes([65 + len(written) % 26]))
        assert len(direct.buffer) >= 3 * STAGE // 2
        monkeypatch.setattr(allocator, "KEEP_AT_MOST", 4 * STAGE)  # a smaller burst than KEEP_AT_MOST's, same rule
        big = allocator.KEEP_AT_MOST + 1 - direct.at  # a burst's
        written += _put_in_stage(direct, big, big, b"z")
        assert len(direct.buffer) == STAGE  # let go after the burst's write
        direct.close()
    assert path.read_bytes() == written


def test_a_grown_stage_is_kept_while_the_writes_need_it(disk_dir, monkeypatch):
    """A stage grown for a pass's text stays grown while the passes keep
    writing about as much (a stream's: regrowing it every pass faulted its
    pages in again), and goes back to STAGE after QUIET_PASSES small
    writes or idle passes in a row."""
    stage = 16 * BLOCK  # STAGE's rule on smaller writes: a test that writes megabytes, not hundreds
    monkeypatch.setattr(direct_output, "STAGE", stage)
    path = disk_dir / "out"
    written = b""
    with open(path, "wb") as f:
        direct = DirectOutput.for_fd(f.fileno())

        def put(n: int) -> None:
            nonlocal written  # the writers ask for their bound, about twice the text
            written += _put_in_stage(direct, n, 2 * n, bytes([65 + len(written) % 26]))

        put(3 * stage // 2)
        grown = direct.buffer
        assert len(grown) > stage
        for _ in range(3 * QUIET_PASSES):  # a steady stream of passes as big
            put(3 * stage // 2)
            assert direct.buffer is grown, "kept, not let go and grown again"
        for i in range(QUIET_PASSES - 1):  # quiet: idle passes and small writes, in turn
            put(BLOCK) if i % 2 else direct.idle()
            assert direct.buffer is grown
        direct.idle()
        assert len(direct.buffer) == stage, "let go after QUIET_PASSES quiet passes"
        put(100)
        direct.close()
    assert path.read_bytes() == written


def test_not_used_where_it_could_not_be_exact(tmp_path):
    read, write = os.pipe()
    try:
        assert DirectOutput.for_fd(write) is None  # not a regular file
    finally:
        os.close(read)
        os.close(write)
    path = tmp_path / "out"
    path.write_bytes(b"before\n")
    with open(path, "ab") as f:
        assert DirectOutput.for_fd(f.fileno()) is None  # `>>`: O_APPEND writes at the end, wherever that is
    with open(path, "r+b") as f:
        f.seek(7)
        assert DirectOutput.for_fd(f.fileno()) is None  # an offset inside a block
    with open(path, "wb") as f:
        saved = os.dup(2)
        try:
            os.dup2(f.fileno(), 2)  # `> FILE 2>&1`: stderr's lines go at stdout's offset
            assert DirectOutput.for_fd(f.fileno()) is None
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        assert DirectOutput.for_fd(f.fileno()) is not None


def test_another_writer_ends_direct_writes_and_nothing_is_overwritten(disk_dir):
    path = disk_dir / "out"
    with open(path, "wb") as f:
        reader = Reader(f)
        reader.write(b"a" * 10_000)
        assert reader.direct
        os.write(f.fileno(), b"<someone else>")  # at stdout's offset: the end
        reader.write(b"b" * 10_000)  # the ordinary way from now on
        assert reader.direct is False
        reader.write("c" * 100)
        reader.close()
    assert path.read_bytes() == b"a" * 10_000 + b"<someone else>" + b"b" * 10_000 + b"c" * 100


def test_a_file_system_refusing_direct_writes_gets_every_byte_the_ordinary_way(disk_dir, monkeypatch):
    path = disk_dir / "out"
    with open(path, "wb") as f:
        reader = Reader(f)
        reader.write(b"a" * 100)  # a partial block: nothing direct yet
        direct = reader.direct
        real = os.pwrite

        def refusing(fd, data, offset):
            if fd == direct.direct_fd:
                raise OSError(errno.EINVAL, os.strerror(errno.EINVAL))
            return real(fd, data, offset)

        monkeypatch.setattr(os, "pwrite", refusing)
        reader.write(b"b" * 3 * BLOCK)
        assert reader.direct is False  # given up for good
        reader.write(b"c" * 5)
        reader.close()
    assert path.read_bytes() == b"a" * 100 + b"b" * 3 * BLOCK + b"c" * 5


def test_a_disk_error_is_raised_as_a_write_of_stdout_would(tmp_path):
    """/dev/full is not a regular file (the ordinary path); a real disk
    error of a direct write is an OSError too: the CLI's one line."""
    if not Path("/dev/full").exists():
        pytest.fail("/dev/full is missing")
    with open("/dev/full", "wb") as f:
        reader = Reader(f)
        with pytest.raises(OSError) as error:
            reader.write(b"x" * 10)
        assert error.value.errno == errno.ENOSPC and reader.direct is False


def test_stdout_to_a_file_in_a_subprocess_keeps_its_offset_for_the_shell(disk_dir):
    """`{ tracer ...; echo done; } > FILE`: what comes after the tracer's
    output lands after it, as it would after ordinary writes."""
    path = disk_dir / "out"
    code = ("import sys; from tracer.output import Reader; r = Reader(); "
            "[r.write(b'%d\\n' % i * 500) for i in range(3000)]; r.close()")
    with open(path, "wb") as f:
        subprocess.run([sys.executable, "-c", code], stdout=f, check=True, cwd=REPO)
        subprocess.run(["echo", "done"], stdout=f, check=True)
    expected = b"".join(b"%d\n" % i * 500 for i in range(3000)) + b"done\n"
    assert path.read_bytes() == expected

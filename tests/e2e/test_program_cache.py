"""The program cache for real (tracer/kernel/program_cache.py,
cached_module.py): a cold start compiles and fills it, a warm start loads
the same programs without clang and follows the same packets the same way,
a corrupt entry, one whose parameter slots were tampered with and one the
kernel refuses are compiled again, and nothing stays in the kernel either
way. Each test has its own cache directory. (Both starts load with the
cache's loader: BCC only compiles.)"""

from __future__ import annotations

import logging
import os
import time

import pytest

from tests.e2e.tracing import Tracer, connect_from, hops, kernel_snapshot, own_source_ports, wait_gone
from tracer.kernel import program_cache as pc
from tracer.kernel.cached_module import CachedModule

EXIT_ONLY = bytes([0x95, 0, 0, 0, 0, 0, 0, 0])  # exit with r0 unset: the verifier refuses it


@pytest.fixture
def cache_dir(tmp_path, monkeypatch):
    where = tmp_path / "programs"
    monkeypatch.setenv("TRACER_PROGRAM_CACHE_DIR", str(where))
    monkeypatch.delenv("TRACER_PROGRAM_CACHE", raising=False)
    monkeypatch.delenv("TRACER_DEBUG", raising=False)
    return where


def _bpf_fds() -> int:
    """BPF maps and programs this process holds."""
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            count += os.readlink(f"/proc/self/fd/{fd}").startswith("anon_inode:bpf-")
        except OSError:
            pass
    return count


def _session(lab, ports=None):
    from tracer.session import TraceOptions, TraceSession
    from tracer.targets import Targets

    return TraceSession(TraceOptions(Targets(ports=ports or (lab["port"],)))).start()


def _sees_traffic(session, lab) -> int:
    """Sightings drained after a request of our own through the lab."""
    sport = own_source_ports(1)[0]
    connect_from(lab, sport)
    seen, deadline = 0, time.monotonic() + 10
    while time.monotonic() < deadline and not seen:
        seen = session.poll(0.2).num_rows
    return seen


def _entry(cache_dir):
    entries = list(cache_dir.glob("*.prog"))
    assert len(entries) == 1, entries
    return entries[0]


def test_cold_start_fills_the_cache_and_a_warm_start_uses_it(lab, cache_dir):
    before, fds = kernel_snapshot(), _bpf_fds()
    # Two ports: the filter's hash map is written through the cached module's tables too.
    cold = _session(lab, (lab["port"], lab["port"] + 1))
    try:
        assert "compiled" in cold.startup and "from cache" not in cold.startup
        assert _sees_traffic(cold, lab)
    finally:
        cold.close()
    entry = _entry(cache_dir)
    assert os.stat(cache_dir).st_mode & 0o777 == 0o700 and os.stat(entry).st_mode & 0o777 == 0o600

    warm = _session(lab, (lab["port"], lab["port"] + 1))
    try:
        assert isinstance(warm.bpf, CachedModule), "the programs came from the cache"
        assert "from cache" in warm.startup and "compiled" not in warm.startup
        assert _sees_traffic(warm, lab)
        counts = warm.counters()
        assert counts.emitted["tc"] > 0 and counts.total_lost == 0, counts  # per-CPU maps read through fds
        table = warm.bpf["filter_ports"]
        assert len(table) == 2, "both ports in the filter's hash map"
        assert warm.startup["programs loaded"] < cold.startup["compiled"]
    finally:
        warm.close()
    assert _bpf_fds() == fds, "every map and program fd closed"
    progs, links = wait_gone(before)
    assert not progs and not links, (progs, links)


def test_cold_and_warm_cli_runs_follow_a_packet_the_same_way(lab, cache_dir):
    before = kernel_snapshot()
    paths = []
    for run in ("cold", "warm"):
        t = Tracer("--port", str(lab["port"]), "--duration", "30", env={"TRACER_PROGRAM_CACHE_DIR": str(cache_dir)})
        t.wait_ready()
        sport = own_source_ports(1)[0]
        connect_from(lab, sport)
        time.sleep(0.5)
        journeys = t.stop()
        assert t.returncode == 0, t.stderr
        syn = [j for j in journeys if j["tcp_flags"] == "S" and j["hops"][0]["src"].endswith(f":{sport}")]
        assert syn, f"{run}: no SYN journey from port {sport}"
        paths.append(hops(syn[0]))
        assert _entry(cache_dir)
    assert paths[0] == paths[1], "the same hops, NAT stages and interfaces from the cached programs"
    progs, links = wait_gone(before)
    assert not progs and not links, (progs, links)


def test_a_corrupt_entry_is_compiled_again_and_replaced(lab, cache_dir, caplog):
    _session(lab).close()  # fills the cache
    entry = _entry(cache_dir)
    data = bytearray(entry.read_bytes())
    data[len(data) // 2] ^= 0xFF
    entry.write_bytes(bytes(data))
    before, fds = kernel_snapshot(), _bpf_fds()
    with caplog.at_level(logging.WARNING):
        session = _session(lab)
    try:
        assert "compiled" in session.startup and "from cache" not in session.startup
        assert "unusable" in caplog.text
        assert _sees_traffic(session, lab)
    finally:
        session.close()
    key = _entry(cache_dir).stem
    assert pc.decode(_entry(cache_dir).read_bytes(), key).program("trc_tc").params, "replaced by a good one"
    assert _bpf_fds() == fds
    assert wait_gone(before) == ([], [])


def test_an_entry_the_kernel_refuses_is_compiled_again_and_nothing_stays(lab, cache_dir, caplog):
    _session(lab).close()
    entry = _entry(cache_dir)
    key = entry.stem
    good = pc.decode(entry.read_bytes(), key)
    # A well-formed entry (its checksum matches) whose drop program the verifier refuses.
    programs = tuple(pc.ProgramSpec(p.name, EXIT_ONLY, ()) if p.name == "trc_drop" else p for p in good.programs)
    entry.write_bytes(pc.encode(pc.Compiled(good.license, good.kern_version, good.maps, programs), key))
    before, fds = kernel_snapshot(), _bpf_fds()
    with caplog.at_level(logging.WARNING):
        session = _session(lab)
    try:
        assert session.startup.get("compiled", 0) > session.startup["from cache"], "compiled after the refusal"
        assert "not loadable here" in caplog.text and "trc_drop" in caplog.text
        assert _sees_traffic(session, lab)
    finally:
        session.close()
    assert pc.decode(_entry(cache_dir).read_bytes(), key).program("trc_drop").insns != EXIT_ONLY
    assert _bpf_fds() == fds, "the refused module's maps and programs were closed"
    assert wait_gone(before) == ([], [])


def test_an_entry_whose_shared_body_lost_its_parameter_slot_is_compiled_again(lab, cache_dir, caplog):
    """Tampered with and checksummed again: the tc body without its slot
    would load the marker itself as every tc program's hook."""
    _session(lab).close()
    entry = _entry(cache_dir)
    key = entry.stem
    good = pc.decode(entry.read_bytes(), key)
    assert good.program("trc_tc").params and good.program("trc_nf").params
    programs = tuple(pc.ProgramSpec(p.name, p.insns, p.relocs, ()) if p.name == "trc_tc" else p for p in good.programs)
    entry.write_bytes(pc.encode(pc.Compiled(good.license, good.kern_version, good.maps, programs), key))
    before, fds = kernel_snapshot(), _bpf_fds()
    with caplog.at_level(logging.WARNING):
        session = _session(lab)
    try:
        assert "compiled" in session.startup and "from cache" not in session.startup
        assert "unusable" in caplog.text and "parameter slots" in caplog.text
        assert _sees_traffic(session, lab)
    finally:
        session.close()
    assert pc.decode(_entry(cache_dir).read_bytes(), key).program("trc_tc").params == good.program("trc_tc").params
    assert _bpf_fds() == fds
    assert wait_gone(before) == ([], [])


_STOP_AFTER_BUILD = """
import sys
from tracer.kernel.kernel_filter import Filter

def stop(self, bpf):  # right after the build, before anything is attached
    raise SystemExit(3)

Filter.fill_maps = stop
from tracer.cli import main
sys.argv = ["tracer", "trace", "--port", "65000"]
main()
"""


def test_a_cold_start_shows_the_warnings_the_main_thread_logs_during_the_compile(tmp_path):
    """The compile (a pool thread) redirects fd 2 while the main thread
    reads Docker's inventory: its warning reaches the terminal, clang's
    header noise does not."""
    import subprocess
    import sys

    env = dict(os.environ, TRACER_PROGRAM_CACHE="0", DOCKER_HOST=f"unix://{tmp_path}/no-docker.sock")
    env.pop("TRACER_DEBUG", None)
    before = kernel_snapshot()
    run = subprocess.run([sys.executable, "-c", _STOP_AFTER_BUILD], env=env, capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 3, run.stderr
    assert "tracer: WARNING: no Docker engine: tracing host interfaces only" in run.stderr
    assert "warning generated" not in run.stderr and "warnings generated" not in run.stderr
    assert wait_gone(before) == ([], [])

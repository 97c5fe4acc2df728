"""--hooks: the hook profiles (tracer/sensors/hook_profile.py), what each
attaches, and the option's parsing (bad values: one line, exit 2)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tracer.follow import Attachments
from tracer.inventory import Container, Interface
from tracer.sensors import hook_profile as hp
from tracer.sensors.netfilter import NetfilterSensor
from tracer.sensors.tc import TcSensor

REPO = Path(__file__).resolve().parents[2]


def test_lean_leaves_out_the_hooks_before_nat_forward_and_nothing_else_at_netfilter():
    assert [p.name for p in NetfilterSensor().probes] == ["pre_b", "pre_a", "in_b", "in_a", "fwd", "out_b", "out_a",
                                                          "post_b", "post_a"]
    # OUTPUT before NAT stays: a host-sent packet's first sighting, its addresses before OUTPUT's DNAT.
    assert [p.name for p in NetfilterSensor("lean").probes] == ["pre_a", "in_a", "out_b", "out_a", "post_a"]


def test_lean_with_iface_keeps_prerouting_before_nat():
    # tc watches the --iface interfaces only: a packet arriving elsewhere has
    # no hop before PREROUTING, so its addresses before DNAT are kept there.
    assert [p.name for p in NetfilterSensor("lean", tc_narrowed=True).probes] == ["pre_b", "pre_a", "in_a", "out_b",
                                                                                 "out_a", "post_a"]
    assert len(NetfilterSensor("all", tc_narrowed=True).probes) == 9


def test_left_out_names_the_hops_a_lean_journey_lacks():
    lean = [("nf_prerouting", "before", None), ("nf_input", "before", None), ("nf_forward", None, None),
            ("nf_postrouting", "before", None), ("tc_ingress", None, "bridge"), ("tc_egress", None, "bridge")]
    kept = [("nf_prerouting", "after", None), ("nf_postrouting", "after", None), ("nf_input", "after", None),
            ("nf_output", "before", None), ("nf_output", "after", None), ("tc_ingress", None, "external"),
            ("tc_egress", None, "veth"), ("tc_ingress", None, "container"), ("tc_egress", None, "external"),
            ("drop", None, None)]
    assert all(hp.left_out("lean", *hop) for hop in lean)
    assert not any(hp.left_out("lean", *hop) for hop in kept)
    assert not any(hp.left_out("all", *hop) for hop in lean + kept)
    with pytest.raises(ValueError, match="unknown hook profile 'fast'"):
        hp.left_out("fast", "nf_forward", None, None)


def _container():
    return Container(id="c1", name="web", pid=1, netns_path="/proc/1/ns/net", netns_inode=99, ips=("172.17.0.2",),
                     bridge="docker0", bridge_ifindex=3, host_veth="veth1", host_veth_ifindex=5, eth0_ifindex=2, published=())


@pytest.mark.parametrize("bridges, roles", [(True, ["external", "bridge", "veth", "container"]),
                                            (False, ["external", "veth", "container"])])
def test_the_bridges_are_tc_targets_only_in_the_full_profile(bridges, roles):
    host = [Interface(2, "eth9", "external", 7), Interface(3, "docker0", "bridge", 7), Interface(5, "veth1", "veth", 7)]
    a = Attachments(TcSensor([]), lambda: host, (), bridges=bridges)
    targets = a.initial([_container()])
    assert [t.role for t in targets] == roles
    added = []
    a.tc.add = added.append
    a.tc.remove = lambda predicate: []
    a.container_started(_container())
    assert ("bridge" in [t.role for t in added]) == bridges


@pytest.mark.parametrize("command", [["trace"], ["record", "-w", "x.arrows"], ["latency"]])
def test_a_bad_hook_profile_is_one_line_before_any_kernel_work(command):
    out = subprocess.run([sys.executable, "-m", "tracer", *command, "--hooks", "fast"], cwd=REPO, capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 2, out
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("tracer: error: Invalid value for '--hooks'"), out.stderr
    assert "'fast' is not one of 'all', 'lean'" in lines[0], out.stderr


def test_every_live_command_takes_the_profile_and_it_reaches_the_session_options():
    from tracer.cli import latency, record, trace
    from tracer.cli.options import options_from

    from tracer.cli import explain

    helps = set()
    for cmd in (trace.trace, record.record, latency.latency, explain.explain):
        hooks = next(p for p in cmd.params if p.name == "hooks")
        assert hooks.default == "all" and list(hooks.type.choices) == ["all", "lean"], cmd.name
        helps.add(hooks.help)
    assert len(helps) == 1, "one option, one help text"
    assert options_from((8000,), (), (), None, (), "auto", hooks="lean").hooks == "lean"
    assert options_from((8000,), (), (), None, (), "auto").hooks == "all"


def test_stats_says_a_lean_capture_is_lean_and_an_older_one_nothing():
    from tests.unit.analysis_data import METADATA, event_table, lab_capture
    from tracer.analysis import analyse
    from tracer.render import stats_text

    rows, _ = lab_capture()
    table = event_table(rows)
    lean = stats_text(analyse(table, {**METADATA, "hooks": "lean"}), None, 10).splitlines()[0]
    older = stats_text(analyse(table, METADATA), None, 10).splitlines()[0]  # written before the key existed
    assert lean.endswith("filter port 8000  hooks lean") and older.endswith("filter port 8000"), (lean, older)


def test_lean_with_iface_says_it_kept_prerouting_before_nat(tmp_path):
    """--iface keeps PREROUTING before NAT under lean: the capture says so
    (``hooks_kept``), and `stats`, the report's header and the start line
    name it after the profile; older captures and the full profile say nothing more."""
    from tests.unit.analysis_data import METADATA, event_table, lab_capture
    from tracer.analysis import analyse
    from tracer.render import run_started, stats_text, waiting_for_connection

    assert hp.kept_anyway("lean", tc_narrowed=True) == ("nf_prerouting/before",)
    assert hp.kept_anyway("lean", tc_narrowed=False) == () and hp.kept_anyway("all", tc_narrowed=True) == ()
    kept = [p.name for p in NetfilterSensor("lean", tc_narrowed=True).probes if p.name not in
            [q.name for q in NetfilterSensor("lean").probes]]
    assert kept == ["pre_b"], "kept_anyway names what the sensor attaches beyond the profile"
    assert hp.named({"hooks": "lean", "hooks_kept": "nf_prerouting/before"}) == "lean + nf_prerouting/before"
    assert hp.named({"hooks": "lean", "hooks_kept": ""}) == "lean" and hp.named({}) == "all"
    rows, _ = lab_capture()
    first = stats_text(analyse(event_table(rows), {**METADATA, "hooks": "lean", "hooks_kept": "nf_prerouting/before"}),
                       None, 10).splitlines()[0]
    assert first.endswith("filter port 8000  hooks lean + nf_prerouting/before"), first
    from click.testing import CliRunner

    from tests.unit.analysis_data import capture_table, write_capture
    from tracer.cli import cli

    # Files of one profile, one with --iface: still that profile (drops placed by it), the kept hop named by file.
    lean = capture_table([r for r in rows if not hp.left_out("lean", r["hook"], r["nat_stage"], r["if_role"])])
    files = [str(write_capture(tmp_path / name, lean, {**METADATA, "hooks": "lean", "hooks_kept": kept}))
             for name, kept in (("iface.arrows", "nf_prerouting/before"), ("plain.arrows", ""), ("more.arrows", ""))]
    out = CliRunner().invoke(cli, ["stats", *files]).output
    assert out.splitlines()[0].endswith("hooks lean + nf_prerouting/before (iface.arrows)"), out
    assert "after nf_prerouting/after (FORWARD/INPUT not traced: --hooks lean)" in out, out
    full = str(write_capture(tmp_path / "full.arrows", capture_table(rows), {**METADATA, "hooks": "all"}))
    out = CliRunner().invoke(cli, ["stats", files[0], full]).output.splitlines()[0]
    assert out.endswith("hooks lean + nf_prerouting/before (iface.arrows), all (full.arrows)"), out
    line = run_started("tracing", "port 8000", 3, 1.0, hooks="lean", kept=("nf_prerouting/before",))
    assert ", lean hooks + nf_prerouting/before (ready" in line, line
    assert ", lean hooks (ready" in run_started("tracing", "port 8000", 3, 1.0, hooks="lean")
    assert waiting_for_connection("port 8000", "lean") == "tracer: waiting for a connection (port 8000, lean hooks); Ctrl-C to stop"
    assert waiting_for_connection("port 8000") == "tracer: waiting for a connection (port 8000); Ctrl-C to stop"


class FakeTc:
    """TcSensor's bookkeeping without a kernel: attached targets by key."""

    def __init__(self) -> None:
        self.links, self.role_writes = {}, []

    def add(self, target) -> None:
        self.links.setdefault(target.key, target)

    def remove(self, predicate) -> list:
        gone = [t for t in self.links.values() if predicate(t)]
        for t in gone:
            del self.links[t.key]
        return gone

    def replace_target(self, target) -> None:
        if target.key in self.links:
            self.links[target.key] = target
            self.role_writes.append((target.ifindex, target.role))

    def targets(self) -> list:
        return list(self.links.values())


def _on_new_network(bridges: bool):
    """A network created after the start: link events took its bridge (3)
    and its first container's veth (5) for external interfaces; then the
    container starts and inventory knows them."""
    host = [Interface(2, "eth9", "external", 7), Interface(3, "docker0", "external", 7),
            Interface(5, "veth1", "external", 7)]
    a = Attachments(FakeTc(), lambda: host, (), bridges=bridges)
    a.sync_host_interfaces()
    assert {t.role for t in a.tc.targets()} == {"external"} and len(a.tc.targets()) == 3
    a.container_started(_container())
    started = {t.ifname: t.role for t in a.tc.targets()}
    host[1:] = [Interface(3, "docker0", "bridge", 7), Interface(5, "veth1", "veth", 7)]
    a.sync_host_interfaces()  # the next link event: the interfaces in their real roles
    return started, {t.ifname: t.role for t in a.tc.targets()}, a.tc.role_writes


def test_a_veth_taken_for_an_external_interface_ends_attached_as_a_veth(monkeypatch):
    from tracer import follow

    monkeypatch.setattr(follow, "host_netns_inode", lambda: 7)
    started, roles, writes = _on_new_network(bridges=True)
    assert started == roles == {"eth9": "external", "docker0": "bridge", "veth1": "veth", "eth0": "container"}
    assert (5, "veth") in writes and (3, "bridge") in writes  # the kernel's role changed in place



def test_lean_lets_go_a_bridge_taken_for_an_external_interface(monkeypatch):
    from tracer import follow

    monkeypatch.setattr(follow, "host_netns_inode", lambda: 7)
    started, roles, _ = _on_new_network(bridges=False)  # gone at the start already, not at the next link event
    assert started == roles == {"eth9": "external", "veth1": "veth", "eth0": "container"}

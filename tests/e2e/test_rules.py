"""Rule attribution (`--rules`) on the real kernel, dockerd's real iptables
rules and the lab (issue 10): the rules named are the rules that acted, at
the positions and in the text `iptables -S` shows.

Rules these tests insert into DOCKER-USER match only their own connections:
the lab client's address, a fixed source port above the client netns's
ephemeral range (1024-65000), and a comment naming the test; fixtures always
delete them.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest

from tests.e2e.tracing import REPO, Tracer, connect_from, hops, index_of, own_source_ports
from tracer import traffic

COMMENT = "tracer-test-issue10"


def _nft_tables() -> list[str]:
    return subprocess.run(["nft", "list", "tables"], capture_output=True, text=True, check=True).stdout.split("\n")


def _our_tables() -> set[str]:
    return {line.split()[-1] for line in _nft_tables() if line.startswith("table inet tracer_")}


def _ruleset() -> str:
    """`nft list ruleset` without counter values (-s), and without marking
    tables (inet tracer_*): concurrent runs of these tests add and remove
    theirs; this test checks its own by name."""
    text = subprocess.run(["nft", "-s", "list", "ruleset"], capture_output=True, text=True, check=True).stdout
    return re.sub(r"(?ms)^table inet tracer_\d+ \{.*?^\}\n?", "", text)


def _assert_same_ruleset(before: str, after: str, lab) -> None:
    """`nft list ruleset` unchanged, but for Docker's own rules for other
    containers and networks (engineers start and remove theirs on this host
    meanwhile): lines naming another container address or a user-defined
    bridge may come and go."""
    if before == after:
        return
    from collections import Counter

    def theirs(line: str) -> bool:
        addrs = set(re.findall(r"\b172\.\d+\.\d+\.\d+\b", line)) - {lab["container_ip"]}
        if addrs - {a for a in addrs if a.endswith(".0.0")} or "br-" in line:
            return True
        # other tests' DROP rules for the lab client (this file's, test_trace.py's), running concurrently
        return COMMENT in line or (lab["client_address"] in line and line.strip().endswith("drop"))

    a, b = Counter(before.splitlines()), Counter(after.splitlines())
    changed = [line for line in (a - b) + (b - a) if not theirs(line)]
    assert not changed, f"the ruleset changed beyond Docker's rules for other containers: {changed}"


def _iptables_lines(table: str, chain: str) -> list[str]:
    """The chain's `-A` lines as `iptables -S` prints them, in order."""
    out = subprocess.run(["iptables", "-t", table, "-S", chain], capture_output=True, text=True, check=True).stdout
    return [line for line in out.splitlines() if line.startswith("-A ")]


def _rules(journey: dict, hook: str, stage=None) -> list[dict]:
    return journey["hops"][index_of(journey, hook, stage)]["rules"]


def _seen_by_netfilter(journey: dict) -> bool:
    hooks = {(h["hook"], h["nat_stage"]) for h in journey["hops"]}
    return ("nf_forward", None) in hooks and ("nf_prerouting", "after") in hooks


def _first(journeys, **match):
    """The first journey with these fields whose netfilter hops are all there
    (other tracers attaching and detaching on this shared host can make ours
    miss a packet's netfilter hooks now and then: tests send a few)."""
    for j in journeys:
        if all(j.get(k) == v for k, v in match.items()) and _seen_by_netfilter(j):
            return j
    raise AssertionError(f"no journey with {match} among {[(j['tcp_flags'], j['direction'], j['verdict']) for j in journeys]}")


def _requests(lab, n: int = 3, get=traffic.client_http_get) -> None:
    for _ in range(n):
        get(lab)
        time.sleep(0.1)


def _assert_position(rule: dict) -> None:
    """Its position is where `iptables -S` lists its text."""
    lines = _iptables_lines(rule["table"], rule["chain"])
    assert rule["position"] is not None and 1 <= rule["position"] <= len(lines), (rule, lines)
    assert lines[rule["position"] - 1] == rule["iptables"], (rule, lines)


def _is_syn_from(j: dict, sport: int, verdict: str | None = None) -> bool:
    """A SYN of this test's connection from ``sport`` (seen at its netfilter hooks)."""
    return (j["tcp_flags"] == "S" and j["direction"] in ("original", None) and j["hops"][0]["src"].endswith(f":{sport}")
            and any(h["hook"] == "nf_forward" for h in j["hops"]) and (verdict is None or j["verdict"] == verdict))


def _syn_from(journeys, sport: int, verdict: str | None = None) -> dict:
    """The SYN of this test's connection from ``sport`` (seen at its netfilter hooks)."""
    for j in journeys:
        if _is_syn_from(j, sport, verdict):
            return j
    raise AssertionError(f"no SYN from port {sport} among {[(j['tcp_flags'], j['hops'][0]['src'], j['verdict']) for j in journeys]}")


class DropRule:
    """A DROP rule at the top of DOCKER-USER for one source port of the lab client."""

    def __init__(self, lab, sport: int) -> None:
        self.sport = sport
        self.spec = ["DOCKER-USER", "-s", lab["client_address"], "-p", "tcp", "--sport", str(sport), "--dport",
                     str(lab["container_port"]), "-m", "comment", "--comment", COMMENT, "-j", "DROP"]
        self.inserted = False

    def insert(self) -> None:
        subprocess.run(["iptables", "-I", *self.spec], check=True)
        self.inserted = True

    def delete(self) -> None:
        while subprocess.run(["iptables", "-D", *self.spec], capture_output=True).returncode == 0:
            pass  # every copy, even one a crashed earlier run left
        self.inserted = False


@pytest.fixture
def drop_rule(lab):
    rules = []

    def make(sport: int) -> DropRule:
        rule = DropRule(lab, sport)
        rules.append(rule)
        return rule

    try:
        yield make
    finally:
        for rule in rules:
            rule.delete()
        # ours are gone (a concurrent run of these tests may hold its own, other source port)
        left = _iptables_lines("filter", "DOCKER-USER")
        assert not any(COMMENT in line and f"--sport {r.sport} " in line for r in rules for line in left), left


@pytest.fixture
def no_leftovers():
    """Checker: no nft table that appeared during the test belongs to a
    process that is gone (the test's tracers have exited by then; tables of
    live processes are other runs in progress). test_trace.py checks the BPF
    side; other engineers' tracers load programs of the same names meanwhile."""
    from tracer.kernel.nft_table import process_start

    tables = _our_tables()

    def check() -> None:
        left = {t for t in _our_tables() - tables if process_start(int(t.rsplit("_", 1)[1])) is None}
        assert not left, f"nft tables left by exited tracers: {left}"

    return check


def test_inbound_dnat_and_forward_rules(lab, no_leftovers, tmp_path):
    capture = tmp_path / "rules.arrows"
    t = Tracer("--port", str(lab["port"]), "--rules", "--duration", "30", "-w", str(capture))
    t.wait_ready()
    assert len(_our_tables()) >= 1
    sport = own_source_ports(1)[0]
    connect_from(lab, sport)
    time.sleep(0.5)
    journeys = t.stop()
    assert t.returncode == 0, t.stderr
    dest = f"{lab['container_ip']}:{lab['container_port']}"

    syn = _syn_from(journeys, sport)
    assert syn["verdict"] == "delivered" and _seen_by_netfilter(syn), syn
    pre = _rules(syn, "nf_prerouting", "after")
    dnat = [r for r in pre if r["table"] == "nat" and r["verdict"] == "accept"]
    assert len(dnat) == 1, pre
    assert f"--dport {lab['port']}" in dnat[0]["iptables"] and f"--to-destination {dest}" in dnat[0]["iptables"], dnat
    assert dnat[0]["chain"] == "DOCKER" and dnat[0]["nft"] and "dnat to" in dnat[0]["nft"]
    _assert_position(dnat[0])
    jump = [r for r in pre if r["chain"] == "PREROUTING" and r["verdict"] == "jump"]
    assert jump and jump[0]["target"] == "DOCKER"

    fwd = _rules(syn, "nf_forward")
    accepted = [r for r in fwd if r["verdict"] == "accept"]
    assert len(accepted) == 1, fwd
    rule = accepted[0]
    assert rule["table"] == "filter" and rule["chain"] == "DOCKER", rule
    assert f"-d {lab['container_ip']}/32" in rule["iptables"] and "-j ACCEPT" in rule["iptables"]
    _assert_position(rule)
    assert syn["drop_rule"] is None
    # rules only on netfilter hops
    assert all(not h["rules"] for h in syn["hops"] if not h["hook"].startswith("nf_"))

    synack = _first(journeys, tcp_flags="SA", direction="reply", flow_id=syn["flow_id"])
    reply_accept = [r for r in _rules(synack, "nf_forward") if r["verdict"] == "accept"]
    assert len(reply_accept) == 1 and reply_accept[0]["chain"] == "FORWARD", reply_accept
    _assert_position(reply_accept[0])

    # the capture holds the rules: `show` replays them as trace showed them
    shown = subprocess.run([sys.executable, "-m", "tracer", "show", "--json", str(capture)], cwd=REPO,
                           capture_output=True, text=True, timeout=60)
    assert shown.returncode == 0, shown.stderr
    replayed = {j["packet_id"]: j for j in map(json.loads, shown.stdout.splitlines())}
    assert replayed[syn["packet_id"]] == syn
    assert replayed[synack["packet_id"]] == synack
    text = subprocess.run([sys.executable, "-m", "tracer", "show", "--no-color", "--port", str(sport), str(capture)],
                          cwd=REPO, capture_output=True, text=True, timeout=60).stdout
    assert f"nat/DOCKER #{dnat[0]['position']}  {dnat[0]['iptables']}  ⇒ accept" in text, text
    no_leftovers()


def test_lean_puts_forward_rules_on_the_hop_before_forward(lab, no_leftovers):
    """--hooks lean has no FORWARD hop: FORWARD's rules go to PREROUTING
    after NAT (the hop before FORWARD), marked "at_hook", not to the
    container's eth0 or the reply's external egress (the journey's last hop)."""
    t = Tracer("--port", str(lab["port"]), "--rules", "--hooks", "lean", "--duration", "30")
    t.wait_ready()
    sport = own_source_ports(1)[0]
    connect_from(lab, sport)
    time.sleep(0.5)
    journeys = t.stop()
    assert t.returncode == 0, t.stderr
    mine = [j for j in journeys if any(h["src"] and h["src"].endswith(f":{sport}") or h["dst"] and h["dst"].endswith(f":{sport}")
                                       for h in j["hops"])]
    syn = next(j for j in mine if j["tcp_flags"] == "S" and j["direction"] in ("original", None))
    synack = next(j for j in mine if j["tcp_flags"] == "SA" and j["flow_id"] == syn["flow_id"])
    for j, chain in ((syn, "DOCKER"), (synack, "FORWARD")):
        assert not any(h["hook"] == "nf_forward" for h in j["hops"]), hops(j)
        at = index_of(j, "nf_prerouting", "after")
        fwd = [r for r in j["hops"][at]["rules"] if r.get("at_hook") == "nf_forward"]
        assert [r["chain"] for r in fwd if r["verdict"] == "accept"] == [chain], j["hops"][at]["rules"]
        assert all(r["table"] == "filter" for r in fwd), fwd
        elsewhere = [r for k, h in enumerate(j["hops"]) if k != at for r in h["rules"] if r["table"] == "filter"]
        assert not elsewhere, (hops(j), elsewhere)
    no_leftovers()


def test_masquerade_rule_for_the_containers_connection(lab, no_leftovers):
    t = Tracer("--port", str(lab["server_port"]), "--rules", "--duration", "30")
    t.wait_ready()
    _requests(lab, get=traffic.container_http_get)
    time.sleep(0.5)
    journeys = t.stop()
    assert t.returncode == 0, t.stderr
    # the last such SYN: this test's (connections made before our table existed carry no rules)
    syn = [j for j in journeys if j["tcp_flags"] == "S" and j["direction"] == "original" and _seen_by_netfilter(j)
           and j["hops"][0]["dst"] == f"{lab['server_address']}:{lab['server_port']}"][-1]
    post = _rules(syn, "nf_postrouting", "after")
    masq = [r for r in post if r["table"] == "nat" and r["iptables"] and "-j MASQUERADE" in r["iptables"]]
    assert len(masq) == 1, post
    assert masq[0]["chain"] == "POSTROUTING" and masq[0]["verdict"] == "accept"
    assert re.search(r"-s 172\.\d+\.0\.0/16 ! -o docker0", masq[0]["iptables"]), masq
    _assert_position(masq[0])
    no_leftovers()


def test_drop_names_the_docker_user_rule(lab, drop_rule, no_leftovers, tmp_path):
    sport = own_source_ports(1)[0]
    rule = drop_rule(sport)
    rule.insert()
    # only this test's connection marked and traced, its journey waited for
    # (test_rule_added_while_tracing_is_named says why)
    t = Tracer("--port", str(sport), "--rules", "--duration", "120", stdout_file=tmp_path / "journeys.json")
    t.wait_ready()
    connect_from(lab, sport, seconds=2)  # the SYN (and a retransmission), each dropped
    j = t.wait_for(f"dropped SYN from {sport} with the rule that dropped it",
                   lambda j: _is_syn_from(j, sport, "dropped") and j["drop_rule"] is not None)
    t.stop()
    assert t.returncode == 0, t.stderr
    assert j["drop_reason"] == "NETFILTER_DROP"
    named = j["drop_rule"]
    assert named is not None, j
    assert named["table"] == "filter" and named["chain"] == "DOCKER-USER" and named["verdict"] == "drop"
    assert f"--comment {COMMENT}" in named["iptables"] and f"--sport {sport}" in named["iptables"]
    _assert_position(named)
    assert named in _rules(j, "nf_forward")
    no_leftovers()


def test_rule_added_while_tracing_is_named(lab, drop_rule, no_leftovers, tmp_path):
    early, dropped_port, late = own_source_ports(3)
    # Only this test's connections are marked and traced (as the README
    # advises for --rules under load): other traffic to the lab's port made
    # the report reader fall seconds behind and drop reports (13 k packets,
    # 143 k reports dropped in one run beside other engineers' benchmarks).
    # The test waits for each journey it needs to be shown, with its rules,
    # never for a fixed time: a loaded machine reads reports late.
    ports = [arg for port in (early, dropped_port, late) for arg in ("--port", str(port))]
    t = Tracer(*ports, "--rules", "--duration", "120", stdout_file=tmp_path / "journeys.json")
    t.wait_ready()
    connect_from(lab, early)  # DOCKER-USER's RETURN rule, at its position before the insert
    # named from the ruleset as it is before the insert: `trace` shows a
    # packet once its rules are in (it waits for them), so its first SYN
    # shown must carry them
    first = t.wait_for(f"SYN from {early}", lambda j: _is_syn_from(j, early, "delivered"))
    rule = drop_rule(dropped_port)
    rule.insert()  # at the top: every rule below moves down one (iptables returns once it is committed)
    connect_from(lab, dropped_port, seconds=2)
    connect_from(lab, late)  # not dropped: passes the new rule, then RETURN at its new position
    # The first dropped SYN, not any: the connection retransmits its SYN
    # about 1 s later, and a tracer that named the new rule only by then
    # must fail here.
    dropped = t.wait_for(f"dropped SYN from {dropped_port}", lambda j: _is_syn_from(j, dropped_port, "dropped"))
    last = t.wait_for(f"SYN from {late}", lambda j: _is_syn_from(j, late, "delivered"))
    t.stop()
    assert t.returncode == 0, t.stderr
    named = dropped["drop_rule"]
    assert named is not None, f"the first dropped SYN does not name the rule that dropped it: {dropped}\n{t.stderr}"
    assert f"--sport {dropped_port}" in named["iptables"] and named["chain"] == "DOCKER-USER", named
    _assert_position(named)
    syns = [first, last]
    returns = [[r for r in _rules(j, "nf_forward") if r["chain"] == "DOCKER-USER"] for j in syns]
    assert returns[0] and returns[1], f"a delivered SYN shown without its DOCKER-USER rules: {syns}\n{t.stderr}"
    before, after = returns[0][-1], returns[1][-1]
    assert before["iptables"] == after["iptables"] == "-A DOCKER-USER -j RETURN", returns
    assert after["position"] == before["position"] + 1, (before, after)
    no_leftovers()


def test_sigkill_leaves_a_table_the_next_run_sweeps(lab, no_leftovers):
    before = _ruleset()
    t = Tracer("--port", str(lab["port"]), "--rules", "--duration", "60")
    t.wait_ready()
    mine = f"tracer_{t.proc.pid}"
    assert mine in _our_tables()
    t.proc.send_signal(signal.SIGKILL)
    t.proc.wait(10)
    assert mine in _our_tables(), "a SIGKILLed run cannot remove its table"
    nxt = Tracer("--port", str(lab["port"]), "--rules", "--duration", "30")
    nxt.wait_ready()
    assert mine not in _our_tables(), "the next run sweeps the dead run's table"
    assert any("nft table(s) tracer_" in line for line in nxt.stderr_lines), nxt.stderr_lines
    nxt.stop()
    assert nxt.returncode == 0, nxt.stderr
    assert not {mine, f"tracer_{nxt.proc.pid}"} & _our_tables()
    _assert_same_ruleset(before, _ruleset(), lab)
    no_leftovers()


def test_legacy_iptables_fails_with_one_line(lab, tmp_path, no_leftovers):
    fake = tmp_path / "iptables"
    fake.write_text("#!/bin/sh\necho 'iptables v1.8.9 (legacy)'\n")
    fake.chmod(0o755)
    env = {**os.environ, "PATH": f"{tmp_path}:{os.environ['PATH']}"}
    done = subprocess.run([sys.executable, "-m", "tracer", "trace", "--rules", "--port", str(lab["port"]), "--duration", "5"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode != 0
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "iptables-legacy" in lines[0] and "Traceback" not in done.stderr, done.stderr
    no_leftovers()


def test_doctor_says_whether_rule_attribution_can_work(tmp_path):
    def doctor(env=None) -> dict:
        done = subprocess.run([sys.executable, "-m", "tracer", "doctor", "--json"], cwd=REPO, capture_output=True,
                              text=True, timeout=180, env=env)
        assert done.returncode == 0, done.stderr  # optional capabilities: never a failure
        return {c["name"]: c for c in json.loads(done.stdout)["capabilities"]}

    caps = doctor()
    assert caps["nftables_trace"]["status"] == "ok", caps["nftables_trace"]
    assert caps["iptables_nft"]["status"] == "ok" and "(nf_tables)" in caps["iptables_nft"]["detail"]
    assert not caps["nftables_trace"]["required"]
    assert "tracer_doctor" not in "".join(_nft_tables()), "the probe's table lives in a netns of its own"
    fake = tmp_path / "iptables"
    fake.write_text("#!/bin/sh\necho 'iptables v1.8.9 (legacy)'\n")
    fake.chmod(0o755)
    legacy = doctor({**os.environ, "PATH": f"{tmp_path}:{os.environ['PATH']}"})["iptables_nft"]
    assert legacy["status"] == "missing" and "legacy" in legacy["detail"] and "iptables-nft" in legacy["fix"]


def _explain_a_connection(lab, *options: str) -> tuple[int, str, str]:
    """`tracer explain OPTIONS` of one connection of this test's own: its
    source port, the line it waited with, and what it printed."""
    sport = own_source_ports(1)[0]  # --port matches either end: this test's connection, not others' to the lab
    proc = subprocess.Popen([sys.executable, "-m", "tracer", "explain", *options, "--port", str(sport),
                             "--timeout", "60"], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    while "Ctrl-C" not in (line := proc.stderr.readline()):
        assert line, proc.communicate()
    connect_from(lab, sport)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    return sport, line, out


def test_explain_the_next_connection(lab, no_leftovers):
    sport, _, out = _explain_a_connection(lab)
    dest = f"{lab['container_ip']}:{lab['container_port']}"
    assert f"Arrived on {lab['host_iface']} from {lab['client_address']}:{sport} for {lab['host_address']}:{lab['port']}." in out, out
    assert re.search(rf"PREROUTING: nat/DOCKER #\d+ \(-A DOCKER .*--dport {lab['port']} .*--to-destination {dest}\) "
                     rf"translated its destination to {dest}", out), out
    assert re.search(r"FORWARD: accepted by filter/DOCKER #\d+ \(-A DOCKER -d ", out), out
    assert f"to container {lab['container']}'s eth0 at {dest}." in out, out
    assert "The reply (tcp SYN-ACK):" in out and f"source back to {lab['host_address']}:{lab['port']}" in out, out
    no_leftovers()


def test_explain_under_lean_hooks(lab, no_leftovers):
    """`explain --hooks lean`: no FORWARD hop, yet the connection is found
    (it was not: a request had to have one), the DNAT is named at
    PREROUTING (against the tc hop before it) and FORWARD's rule is said
    as FORWARD's."""
    sport, line, out = _explain_a_connection(lab, "--hooks", "lean")
    assert f"waiting for a connection (port {sport}, lean hooks)" in line, line  # as trace's start line says it
    dest = f"{lab['container_ip']}:{lab['container_port']}"
    assert re.search(rf"PREROUTING: nat/DOCKER #\d+ \(-A DOCKER .*--dport {lab['port']} .*--to-destination {dest}\) "
                     rf"translated its destination to {dest}", out), out
    assert re.search(r"FORWARD \(no hop traced there\): accepted by filter/DOCKER #\d+ \(-A DOCKER -d ", out), out
    assert f"to container {lab['container']}'s eth0 at {dest}." in out, out
    assert "The reply (tcp SYN-ACK):" in out and f"source back to {lab['host_address']}:{lab['port']}" in out, out
    no_leftovers()


def test_explain_gives_up_in_one_line(lab, no_leftovers):
    done = subprocess.run([sys.executable, "-m", "tracer", "explain", "--port", "65431", "--timeout", "1"], cwd=REPO,
                          capture_output=True, text=True, timeout=90)
    assert done.returncode == 1
    lines = [line for line in done.stderr.splitlines() if not line.startswith("tracer: waiting")]
    assert len(lines) == 1 and "no connection (port 65431) started within 1 s" in lines[0], done.stderr
    no_leftovers()

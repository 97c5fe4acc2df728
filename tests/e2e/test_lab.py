"""The lab end to end: client netns -> host:8000 -> DNAT -> container, the
container -> client server through MASQUERADE, recovery, the engine without
the userland proxy (hairpin NAT), and a clean down.

Traffic goes only to the lab's own addresses (198.18.0.0/30 and the container).
The hairpin tests restart dockerd and the down test takes the lab down; each
brings the default lab back and refreshes the session ``lab`` dict in place
for whoever uses it next (the down test runs last in this file).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time

import pytest

from tests.e2e.tracing import Tracer, index_of
from tracer import lab as lab_mod
from tracer import lab_base, lab_dockerd, lab_image
from tracer.proxies import find_proxies

BUSYBOX = "/bin/busybox"


def sh(*cmd: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, check=check, timeout=60)


def client_get(url: str) -> str:
    # (busybox 1.35's wget -T segfaults: bound it with timeout(1) instead)
    return sh("ip", "netns", "exec", lab_base.NETNS, "timeout", "5", BUSYBOX, "wget", "-q", "-O-", url).stdout


def container_get(url: str) -> str:
    return sh("docker", "exec", lab_base.CONTAINER, "timeout", "5", "wget", "-q", "-O-", url).stdout


def conntrack(*filters: str) -> list[tuple[dict, dict, str]]:
    """(original, reply, entry id) of conntrack entries matching the filters.
    New entries are told apart by id: after heavy traffic a new connection
    may reuse the source port of an entry still in TIME_WAIT."""
    return _conntrack_list(*filters)


def forget_old_entries(*filters: str) -> None:
    """Delete the lab's own earlier entries for these filters. A connection
    that reuses a TIME_WAIT port (tcp_tw_reuse in the client netns) makes
    conntrack replace that entry, often at the same address, so with the same
    id: with none left from before, every entry after the request is new."""
    sh("conntrack", "-D", *filters, check=False)


def _conntrack_list(*filters: str) -> list[tuple[dict, dict, str]]:
    out = sh("conntrack", "-L", "-o", "id", *filters, check=False).stdout
    entries = []
    for line in out.splitlines():
        pairs = re.findall(r"(src|dst|sport|dport)=(\S+)", line)
        entry_id = re.search(r"\bid=(\d+)", line)
        if len(pairs) >= 8 and entry_id:
            entries.append((dict(pairs[:4]), dict(pairs[4:8]), entry_id.group(1)))
    return entries


def refresh(lab: dict) -> dict:
    lab.clear()
    lab.update(lab_mod.status())
    return lab


def test_status_describes_the_contract(lab):
    st = lab_mod.status()
    assert st["up"], st["problems"]
    assert st["netns"] == "tracer-client"
    assert (st["host_address"], st["client_address"], st["port"]) == ("198.18.0.1", "198.18.0.2", 8000)
    assert (st["container"], st["container_port"]) == ("tracer-lab-web", 8080)
    assert (st["server_address"], st["server_port"]) == ("198.18.0.2", 9000)
    assert (st["host_iface"], st["client_iface"]) == ("trc-host", "trc-client")
    assert re.fullmatch(r"\d+\.\d+\.\d+\.\d+", st["container_ip"])
    assert st["container_veth"] and os.path.exists(f"/sys/class/net/{st['container_veth']}")


def test_client_netns_only_route_is_the_host(lab):
    routes = json.loads(sh("ip", "-j", "-n", lab["netns"], "-4", "route", "show").stdout)
    gateways = {r.get("gateway") for r in routes if r.get("gateway")}
    assert gateways == {lab["host_address"]}
    assert all(r["dst"] in ("default", "198.18.0.0/30") for r in routes)
    sysctl = lambda key: sh("ip", "netns", "exec", lab["netns"], "cat", f"/proc/sys/net/ipv4/{key}").stdout.split()
    assert sysctl("tcp_tw_reuse") == ["1"]
    assert sysctl("ip_local_port_range") == ["1024", "65000"]


def test_client_reaches_container_through_dnat(lab):
    flt = ["-p", "tcp", "--orig-src", lab["client_address"], "--orig-dst", lab["host_address"], "--dport", str(lab["port"])]
    forget_old_entries(*flt)
    before = {i for _, _, i in conntrack(*flt)}
    page = client_get(f"http://{lab['host_address']}:{lab['port']}/")
    assert lab_base.INDEX_MARKER in page
    new = [(o, r) for o, r, i in conntrack(*flt) if i not in before]
    assert new, "no new conntrack entry for the client's connection to host:8000"
    for orig, reply in new:
        # DNAT: the reply comes from the container's address and port
        assert (reply["src"], reply["sport"]) == (lab["container_ip"], str(lab["container_port"])), (orig, reply)
        assert reply["dst"] == lab["client_address"]


def test_container_reaches_client_server_through_masquerade(lab):
    flt = ["-p", "tcp", "--orig-src", lab["container_ip"], "--orig-dst", lab["server_address"], "--dport", str(lab["server_port"])]
    forget_old_entries(*flt)
    before = {i for _, _, i in conntrack(*flt)}
    body = container_get(f"http://{lab['server_address']}:{lab['server_port']}/")
    assert lab_base.SERVER_MARKER in body
    new = [(o, r) for o, r, i in conntrack(*flt) if i not in before]
    assert new, "no new conntrack entry for the container's connection to the client server"
    for orig, reply in new:
        # MASQUERADE: the server answers the host's address on the veth
        assert reply["src"] == lab["server_address"] and reply["dst"] == lab["host_address"], (orig, reply)


def test_status_json_cli(lab):
    cp = sh(sys.executable, "-m", "tracer", "lab", "status", "--json")
    st = json.loads(cp.stdout)
    for key in ("netns", "host_address", "client_address", "port", "container", "container_port",
                "container_ip", "server_address", "server_port", "host_iface", "client_iface", "up"):
        assert key in st
    assert st["up"] is True


def test_up_is_idempotent_and_fast(lab):
    before = lab_mod.status()
    t0 = time.monotonic()
    after = lab_mod.up()
    elapsed = time.monotonic() - t0
    assert after["up"]
    assert after["container_id"] == before["container_id"]
    assert after["server_pid"] == before["server_pid"]
    assert elapsed < 5, f"warm lab up took {elapsed:.1f}s"


def test_image_is_not_rebuilt(lab):
    from tracer import dockerd

    dc = dockerd.client()
    image_id = dc.images.get(lab_base.IMAGE).id
    assert lab_image.ensure_image(dc) == image_id
    img = dc.images.get(lab_base.IMAGE)
    assert img.labels.get(lab_base.RECIPE_LABEL)


def test_iperf3_server_in_container(lab):
    out = sh("docker", "exec", lab["container"], "sh", "-c", "iperf3 --version && pidof iperf3").stdout
    assert "iperf" in out


def test_up_recovers_a_stopped_container(lab):
    sh("docker", "stop", "-t", "2", lab_base.CONTAINER)
    st = lab_mod.status()
    assert not st["up"] and any("tracer-lab-web" in p for p in st["problems"])
    assert lab_mod.up()["up"]
    assert lab_base.INDEX_MARKER in client_get(f"http://{lab_base.HOST_ADDRESS}:{lab_base.PORT}/")
    refresh(lab)


def test_up_repairs_a_broken_client_netns(lab):
    sh("ip", "link", "del", lab_base.HOST_IFACE)
    assert not lab_mod.status()["up"]
    st = lab_mod.up()
    assert st["up"], st["problems"]
    assert lab_base.SERVER_MARKER in container_get(f"http://{lab_base.CLIENT_ADDRESS}:{lab_base.SERVER_PORT}/")
    refresh(lab)


# --------------------------------------------------------------------------- hairpin NAT (userland proxy off)


@pytest.fixture(scope="class")
def hairpin_lab(lab):
    """The lab with dockerd restarted with --userland-proxy=false; the
    default engine and lab restored afterwards whatever happens, and the
    session's ``lab`` refreshed (a restarted container has a new veth and
    pid), so every later test sees the default lab."""
    try:
        yield lab_mod.up(userland_proxy=False)
    finally:
        try:
            restored = lab_mod.up()
        finally:
            refresh(lab)
        assert restored["up"] and restored["userland_proxy"] is True and not restored["dockerd_switched"], restored


def _traced_container_get(port: int, url: str, capture) -> list[dict]:
    """The lab container fetches ``url`` (the lab's page) while a tracer of
    ``port`` records to ``capture``: the journeys it printed."""
    t = Tracer("--port", str(port), "--duration", "30", "-w", str(capture))
    t.wait_ready()
    assert lab_base.INDEX_MARKER in container_get(url)
    time.sleep(0.5)
    journeys = t.stop()
    assert t.returncode == 0, t.stderr
    return journeys


def _first_per_source(journeys: list[dict]) -> list[dict]:
    """The first journey of each source address and port (a SYN
    retransmitted on a loaded machine repeats its connection's)."""
    first: dict[str, dict] = {}
    for j in sorted(journeys, key=lambda j: j["ktime_ns"]):
        first.setdefault(j["hops"][0]["src"], j)
    return list(first.values())


def _try_container_get(url: str) -> str:
    cp = sh("docker", "exec", lab_base.CONTAINER, "timeout", "2", "wget", "-q", "-O-", url, check=False)
    return cp.stdout if cp.returncode == 0 else ""


def _wait_until(ready, what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        assert time.monotonic() < deadline, f"{what} not ready within {timeout:.0f}s"
        time.sleep(0.2)


def _bridge_address(bridge: str) -> str:
    addrs = json.loads(sh("ip", "-j", "-4", "addr", "show", "dev", bridge).stdout)
    return addrs[0]["addr_info"][0]["local"]


def _show(*args: str) -> str:
    cp = sh(sys.executable, "-m", "tracer", "show", "--no-color", *args, check=False)
    assert cp.returncode == 0, cp.stderr
    return cp.stdout


class TestWithoutUserlandProxy:
    """`lab up --no-userland-proxy`: Docker's hairpin NAT instead of
    docker-proxy, and what tracer shows of a container reaching a published
    port (its own) through the host."""

    def test_mode_is_stated_and_switching_again_restarts_nothing(self, hairpin_lab):
        st = hairpin_lab
        assert st["up"], st["problems"]
        assert st["userland_proxy"] is False and st["dockerd_switched"] is True
        assert not [p for p in find_proxies() if p.host_port == st["port"]]
        nat = sh("iptables", "-t", "nat", "-S").stdout
        # Docker's hairpin NAT: no RETURN for docker0's own traffic, a DNAT that takes it too
        assert "-A DOCKER -i docker0 -j RETURN" not in nat
        dnat = [line for line in nat.splitlines()
                if f"--dport {st['port']} " in line and "-j DNAT" in line and "-A DOCKER" in line]
        assert dnat and not [line for line in dnat if "! -i docker0" in line], dnat
        with open(f"/sys/class/net/{st['container_veth']}/brport/hairpin_mode") as f:
            assert f.read().strip() == "1"
        pid = lab_dockerd.dockerd_pid()
        assert lab_dockerd.started_by_tracer(pid), "the pid file names the engine the lab started"
        again = lab_mod.up(userland_proxy=False)
        assert lab_dockerd.dockerd_pid() == pid and again["container_id"] == st["container_id"]
        text = sh(sys.executable, "-m", "tracer", "lab", "status").stdout
        assert "userland proxy off (hairpin NAT; dockerd restarted by" in text, text

    @pytest.mark.parametrize("to", ["host_address", "bridge_address"])
    def test_container_to_host_port_is_one_hairpin_journey(self, hairpin_lab, to, tmp_path):
        """The container to a published port of the host (the client-side
        address, or docker0's own) and so back to itself: DNAT at PREROUTING
        and MASQUERADE at POSTROUTING on the same bridge, one journey from its
        eth0 out to its eth0 in; the reply back through reverse NAT."""
        st = hairpin_lab
        bridge, ctr, port, cport = st["bridge"], st["container_ip"], st["port"], st["container_port"]
        gateway = _bridge_address(bridge)
        target = st["host_address"] if to == "host_address" else gateway
        cap = tmp_path / "hairpin.arrows"
        journeys = _traced_container_get(port, f"http://{target}:{port}/", cap)
        assert len({j["packet_id"] for j in journeys}) == len(journeys), "a packet in two journeys"
        syns = _first_per_source([j for j in journeys if j["tcp_flags"] == "S" and j["hops"][0]["src"].startswith(ctr + ":")
                                  and j["hops"][0]["dst"] == f"{target}:{port}"])
        assert len(syns) == 1, [(j["tcp_flags"], j["hops"][0]["src"], j["hops"][0]["dst"]) for j in journeys]
        syn = syns[0]  # (a SYN retransmitted on a loaded machine is the same connection's: its first is taken)
        h = syn["hops"]
        assert (syn["direction"], syn["verdict"], syn["container"]) == ("original", "delivered", st["container"])
        assert "proxy" not in syn, "no docker-proxy on this path"
        assert (h[0]["hook"], h[0]["ifname"], h[0]["container"]) == ("tc_egress", "eth0", st["container"])
        i = index_of(syn, "nf_prerouting", "before", ifname=bridge)
        i = index_of(syn, "nf_prerouting", "after", ifname=bridge, start=i)
        assert (h[i]["src"], h[i]["dst"]) == (h[0]["src"], f"{ctr}:{cport}"), "DNAT to the container port"
        i = index_of(syn, "nf_forward", start=i)
        i = index_of(syn, "nf_postrouting", "after", ifname=bridge, start=i)
        masq = h[i]["src"]
        assert masq.rpartition(":")[0] == gateway and h[i]["dst"] == f"{ctr}:{cport}", "MASQUERADE to docker0's address"
        assert (h[-1]["hook"], h[-1]["ifname"], h[-1]["container"], h[-1]["dst"]) == \
            ("tc_ingress", "eth0", st["container"], f"{ctr}:{cport}"), "ends at the container's eth0"

        replies = [j for j in journeys if j["tcp_flags"] == "SA" and j["flow_id"] == syn["flow_id"]]
        assert replies, [(j["tcp_flags"], j["flow_id"]) for j in journeys]
        sa = min(replies, key=lambda j: j["ktime_ns"])  # the first, should a retransmitted SYN get a second
        r = sa["hops"]
        assert (sa["direction"], sa["verdict"]) == ("reply", "delivered")
        assert (r[0]["hook"], r[0]["ifname"], r[0]["src"], r[0]["dst"]) == ("tc_egress", "eth0", f"{ctr}:{cport}", masq)
        i = index_of(sa, "nf_prerouting", "after", ifname=bridge)
        assert r[i]["dst"] == h[0]["src"], "reverse MASQUERADE: back to the connecting socket"
        i = index_of(sa, "nf_postrouting", "after", ifname=bridge, start=i)
        assert r[i]["src"] == f"{target}:{port}", "reverse DNAT: from the address it connected to"
        assert (r[-1]["hook"], r[-1]["ifname"], r[-1]["dst"]) == ("tc_ingress", "eth0", h[0]["src"])

        # The text names both translations at the bridge (from the capture trace -w wrote).
        text = _show("--packet", syn["packet_id"], str(cap))
        assert re.search(rf"nf_prerouting/after\s+{bridge}\s.*→ {re.escape(ctr)}:{cport}\s+DNAT$", text, re.M), text
        assert re.search(rf"nf_postrouting/after\s+{bridge}\s+{re.escape(masq)} → .*SNAT$", text, re.M), text
        text = _show("--packet", sa["packet_id"], str(cap))
        assert re.search(r"nf_prerouting/after\s.*reverse SNAT$", text, re.M), text
        assert re.search(r"nf_postrouting/after\s.*reverse DNAT$", text, re.M), text


    def test_host_loopback_is_dnat_and_masquerade_without_the_proxy(self, hairpin_lab):
        """`127.0.0.1:8000` on the host with the proxy off: OUTPUT DNAT (Docker
        sets route_localnet on docker0) and a MASQUERADE of the loopback
        source at POSTROUTING, one journey into the container; the reply is
        delivered back to the host at INPUT with its source translated back."""
        st = hairpin_lab
        bridge, ctr, port, cport = st["bridge"], st["container_ip"], st["port"], st["container_port"]
        t = Tracer("--port", str(port), "--duration", "30")
        t.wait_ready()
        page = sh(BUSYBOX, "wget", "-q", "-O-", f"http://127.0.0.1:{port}/").stdout
        assert lab_base.INDEX_MARKER in page
        time.sleep(0.5)
        journeys = t.stop()
        assert t.returncode == 0, t.stderr
        syn = next(j for j in journeys if j["tcp_flags"] == "S" and j["hops"][0]["dst"] == f"127.0.0.1:{port}")
        h = syn["hops"]
        assert (syn["verdict"], syn["container"]) == ("delivered", st["container"]) and "proxy" not in syn
        i = index_of(syn, "nf_output", "after")
        assert h[i]["dst"] == f"{ctr}:{cport}", "DNAT in OUTPUT"
        i = index_of(syn, "nf_postrouting", "after", ifname=bridge, start=i)
        assert h[i]["src"].rpartition(":")[0] == _bridge_address(bridge), "the loopback source MASQUERADEd"
        assert (h[-1]["hook"], h[-1]["ifname"]) == ("tc_ingress", "eth0")
        sa = next(j for j in journeys if j["tcp_flags"] == "SA" and j["flow_id"] == syn["flow_id"])
        assert sa["verdict"] == "delivered" and sa["hops"][-1]["hook"] == "nf_input"
        assert (sa["hops"][-1]["src"], sa["hops"][-1]["dst"]) == (f"127.0.0.1:{port}", h[0]["src"])


    def test_container_to_another_containers_published_port(self, hairpin_lab, tmp_path):
        """The lab's container to another container's port published on the
        host: DNAT on the bridge (no MASQUERADE: Docker masquerades only a
        container reaching itself), one journey from one eth0 to the other,
        whose header names both containers; the reply likewise back."""
        st = hairpin_lab
        name = "tracer-lab-issue11-db"  # tracer-lab-*: `lab down` removes it too, should this test die
        sh("docker", "rm", "-f", name, check=False)
        # a host port Docker picks (free by construction), read back once published
        sh("docker", "run", "-d", "--name", name, "-p", "8080", lab_base.IMAGE, "httpd", "-f", "-p", "8080",
           "-h", "/www")
        try:
            info = json.loads(sh("docker", "inspect", name).stdout)[0]["NetworkSettings"]
            db_ip, port = info["IPAddress"], int(info["Ports"]["8080/tcp"][0]["HostPort"])
            # httpd listens a moment after `docker run` returns: wait for it before tracing
            _wait_until(lambda: lab_base.INDEX_MARKER in _try_container_get(f"http://{st['host_address']}:{port}/"),
                        f"{name}'s httpd on :{port}")
            cap = tmp_path / "two.arrows"
            journeys = _traced_container_get(port, f"http://{st['host_address']}:{port}/", cap)
        finally:
            sh("docker", "rm", "-f", name, check=False)
        syns = _first_per_source([j for j in journeys if j["tcp_flags"] == "S"])
        assert len(syns) == 1, [(j["tcp_flags"], j["hops"][0]["src"], j["hops"][0]["dst"]) for j in journeys]
        syn = syns[0]
        h = syn["hops"]
        assert (h[0]["hook"], h[0]["container"]) == ("tc_egress", st["container"])
        i = index_of(syn, "nf_prerouting", "after", ifname=st["bridge"])
        assert h[i]["dst"] == f"{db_ip}:8080" and h[i]["src"] == h[0]["src"], "DNAT, and no MASQUERADE after"
        assert (h[-1]["hook"], h[-1]["ifname"], h[-1]["container"], h[-1]["src"]) == ("tc_ingress", "eth0", name, h[0]["src"])
        assert syn["verdict"] == "delivered" and syn["container"] == st["container"]
        sa = next(j for j in journeys if j["tcp_flags"] == "SA" and j["flow_id"] == syn["flow_id"])
        assert (sa["hops"][0]["container"], sa["hops"][-1]["container"], sa["verdict"]) == (name, st["container"], "delivered")
        assert sa["hops"][-1]["src"] == f"{st['host_address']}:{port}", "reverse DNAT"
        text = _show(str(cap))
        assert re.search(rf"tcp S .*  \[{st['container']} → {name}\]  delivered", text), text[:3000]
        assert re.search(rf"tcp SA .*  \[{name} → {st['container']}\]  delivered", text), text[:3000]

    # keep last in this class: it takes the lab down (the fixture brings it up again)
    def test_down_gives_dockerd_back_its_arguments(self, hairpin_lab):
        before = lab_mod._read_state()["dockerd"]["argv_before"]
        removed = lab_mod.down()
        assert any("--userland-proxy=false" in r for r in removed), removed
        pid, argv, on = lab_dockerd.current()
        assert (argv, on) == (before, True)
        assert lab_dockerd.started_by_tracer(pid), "the pid file names the restored engine"
        assert not lab_base.STATE_FILE.exists(), "nothing left to restore"
        st = lab_mod.status()
        assert not st["up"] and st["userland_proxy"] is True and not st["dockerd_switched"]


def _pid_alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except OSError:
        return False


# keep last: it takes the lab down, checks nothing is left, and brings it back
def test_down_leaves_nothing_then_up_again(lab):
    server_pid = lab_mod.status()["server_pid"]
    assert server_pid and _pid_alive(server_pid)
    try:
        removed = lab_mod.down()
        assert any("tracer-lab-web" in r for r in removed)
        names = sh("docker", "ps", "-a", "--format", "{{.Names}}").stdout.split()
        assert not [n for n in names if n.startswith("tracer-lab-")]
        assert lab_base.NETNS not in sh("ip", "netns", "list").stdout.split()
        assert sh("ip", "link", "show", "dev", lab_base.HOST_IFACE, check=False).returncode != 0
        assert not _pid_alive(server_pid)
        assert not lab_base.STATE_FILE.exists()
        rules = sh("iptables-save").stdout
        assert "198.18." not in rules
        assert not re.search(r"--dport 8000 .*DNAT", rules), "docker's DNAT for the lab outlived its container"
        st = lab_mod.status()
        assert not st["up"] and st["container_ip"] is None
        assert lab_mod.down() == []  # idempotent
    finally:
        st = lab_mod.up()
        refresh(lab)
    assert st["up"], st["problems"]

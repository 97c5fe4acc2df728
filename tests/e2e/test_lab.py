"""The lab end to end: client netns -> host:8000 -> DNAT -> container, the
container -> client server through MASQUERADE, recovery, and a clean down.

Traffic goes only to the lab's own addresses (198.18.0.0/30 and the container).
The down test runs last in this file and brings the lab back up, refreshing the
session ``lab`` dict in place for whoever uses it next.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time

from tracer import lab as lab_mod
from tracer import lab_base, lab_image

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

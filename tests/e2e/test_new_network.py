"""A Docker network created after the tracer started (review S12B finding 5).

Its bridge and its first container's host-side veth come up before the
tracer's inventory knows the bridge: link events take them for external
interfaces and attach them so. When the container's start event comes, the
veth must end attached as a veth (it was let go by the next interface
sync, so the container's traffic lost its veth hop) and, under
``--hooks lean``, the bridge not attached at all. Both profiles, a real
network and container (removed after), UDP from the host to the
container's address on a port of the test's own.
"""

from __future__ import annotations

import json
import random
import socket
import subprocess
import time

import pytest

from tests.e2e.tracing import Tracer, wait_gone, kernel_snapshot
from tracer import lab_base


def sh(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(args, capture_output=True, text=True, timeout=120, check=check)


def probe(address: str, port: int) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.sendto(b"fixg", (address, port))


def whole_lines(path) -> list[str]:
    text = path.read_text()
    return text[: text.rfind("\n") + 1].splitlines()


@pytest.mark.parametrize("hooks", ["all", "lean"])
def test_the_first_container_on_a_new_network_keeps_its_veth(lab, tmp_path, hooks):
    tag = f"{random.randrange(1 << 24):06x}"
    net, name = f"tracer-lab-n{tag}", f"tracer-lab-n{tag}"  # tracer-lab-*: `lab down` removes the container too
    port = random.randrange(40000, 50000)
    before = kernel_snapshot()
    out = tmp_path / "journeys.jsonl"
    tracer = Tracer("--hooks", hooks, "--port", str(port), stdout_file=out)
    try:
        tracer.wait_ready(90)
        sh("docker", "network", "create", net)
        try:
            sh("docker", "run", "-d", "--name", name, "--network", net, lab_base.IMAGE, "sleep", "600")
            info = json.loads(sh("docker", "inspect", name).stdout)[0]
            address = info["NetworkSettings"]["Networks"][net]["IPAddress"]
            bridge = "br-" + json.loads(sh("docker", "network", "inspect", net).stdout)[0]["Id"][:12]
            veth = next(link["ifname"] for link in json.loads(sh("ip", "-j", "link", "show", "master", bridge).stdout))

            def reached(j):
                return any(h["hook"] == "tc_ingress" and h["container"] == name for h in j["hops"])

            deadline = time.monotonic() + 60
            while not any(reached(json.loads(line)) for line in whole_lines(out) if line.strip()):
                assert time.monotonic() < deadline and tracer.proc.poll() is None, "no probe reached the container"
                probe(address, port)  # until the tracer follows the container (its eth0)
                time.sleep(0.5)
            # The interface syncs that follow the network's links (the bug let
            # the veth go there) settle within a few seconds: then the probes
            # that count.
            time.sleep(4)
            first = len(whole_lines(out))
            for _ in range(3):
                probe(address, port)
                time.sleep(0.3)
            time.sleep(1.5)
        finally:
            sh("docker", "rm", "-f", name, check=False)
            sh("docker", "network", "rm", net, check=False)
        journeys = tracer.stop()
    finally:
        if tracer.proc.poll() is None:
            tracer.proc.kill()
    late = [j for j in journeys[first:] if reached(j) and j["hops"][0]["dst"].startswith(address + ":")]
    assert late, [[(h["hook"], h["ifname"]) for h in j["hops"]] for j in journeys]
    for j in late:
        path = [(h["hook"], h["nat_stage"], h["ifname"]) for h in j["hops"]]
        assert ("tc_egress", None, veth) in path, path
        on_bridge = [hook for hook, _, ifname in path if ifname == bridge and hook.startswith("tc_")]
        assert on_bridge == ([] if hooks == "lean" else ["tc_egress"]), path
    assert tracer.returncode == 0, tracer.stderr
    assert wait_gone(before) == ([], []), "the tracer left links or programs behind"

"""The docker-proxy link sensor (bpf/proxy.c) on its own, with real BPF on
the real kernel hooks (tcp:tcp_rcv_space_adjust, sock:sock_send_length):
a relay process of our own, made a "proxy" by putting its pid in
proxy_pids, copies bytes between two loopback TCP connections as
docker-proxy does (splice through a pipe) or as other proxies do (recv then
send). What it relays is linked, exactly pair by pair; the same traffic
from a process that is not a proxy is not; a kernel without one of the
tracepoints is told, and nothing stays attached."""

from __future__ import annotations

import ctypes
import json
import logging
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.e2e.tracing import link_ids_held_by
from tracer.proxies import DockerProxy, ProxyLinks, read_links

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (loads and attaches BPF programs)")

# A relay: listens on an ephemeral port (printed), and for each client opens
# a connection to the backend and copies both ways, one thread per
# direction, until both sides are done. MODE splice: socket -> pipe ->
# socket, as Go's io.Copy between TCP connections (docker-proxy); MODE rw:
# recv then sendall.
RELAY = r"""
import os, socket, sys, threading
mode, family, backend_port = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
proto = 262 if mode == "mptcp" else 0  # IPPROTO_MPTCP, relayed with recv/send
host = "::1" if family == socket.AF_INET6 else "127.0.0.1"
srv = socket.socket(family, socket.SOCK_STREAM, proto)
srv.bind((host, 0))
srv.listen(16)
print(srv.getsockname()[1], flush=True)

def copy(src, dst):
    try:
        if mode == "splice":
            r, w = os.pipe()
            while True:
                n = os.splice(src.fileno(), w, 1 << 20)
                if not n:
                    break
                while n:
                    n -= os.splice(r, dst.fileno(), n)
        else:
            while data := src.recv(1 << 16):
                dst.sendall(data)
    except OSError:  # the other end reset
        pass
    try:
        dst.shutdown(socket.SHUT_WR)
    except OSError:
        pass

def serve(client):
    back = socket.socket(family, socket.SOCK_STREAM, proto)
    back.connect((host, backend_port))
    ts = [threading.Thread(target=copy, args=(client, back)), threading.Thread(target=copy, args=(back, client))]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    client.close()
    back.close()

while True:
    c, _ = srv.accept()
    threading.Thread(target=serve, args=(c,), daemon=True).start()
"""


class Backend:
    """A TCP server that reads a request of a size it is told in its first
    line, answers `reply` bytes and closes (like busybox httpd); `rude`:
    it answers after the first line and closes with the request unread,
    so its end resets the connection. `peers`: each connection's peer
    address -> the request size it announced."""

    def __init__(self, family: int, rude: bool = False, banner: int = 0) -> None:
        self.host = "::1" if family == socket.AF_INET6 else "127.0.0.1"
        self.rude = rude
        self.banner = banner
        self.peers: dict[tuple, int] = {}
        self.srv = socket.socket(family)
        self.srv.bind((self.host, 0))
        self.srv.listen(16)
        self.port = self.srv.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                c, peer = self.srv.accept()
            except OSError:
                return
            threading.Thread(target=self._one, args=(c, peer[:2]), daemon=True).start()

    def _one(self, c: socket.socket, peer: tuple) -> None:
        with c:
            if self.banner:  # speaks first, then closes: its bytes and its FIN arrive together
                self.peers[peer] = 0
                c.sendall(b"b" * self.banner)
                return
            data = b""
            while b"\n" not in data:
                data += c.recv(4096)
            head, _, rest = data.partition(b"\n")
            size, reply = (int(x) for x in head.split())
            self.peers[peer] = size
            got = len(rest)
            while got < size and not self.rude:
                got += len(c.recv(1 << 16))
            c.sendall(b"r" * reply)

    def close(self) -> None:
        self.srv.close()


class Relay:
    def __init__(self, mode: str, family: int, backend: Backend) -> None:
        self.proc = subprocess.Popen([sys.executable, "-c", RELAY, mode, str(int(family)), str(backend.port)],
                                     stdout=subprocess.PIPE, text=True)
        self.port = int(self.proc.stdout.readline())
        self.host = backend.host

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait()


def _exchange(host: str, port: int, size: int, reply: int, hold: float = 0.0, send: int | None = None
              ) -> tuple[tuple, bytes]:
    """One client: `size` bytes of request (announced; `send` of them sent
    when given), the whole reply; its own address."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family) as s:
        s.settimeout(10)
        s.connect((host, port))
        me = s.getsockname()[:2]
        time.sleep(hold)
        head = f"{size} {reply}\n".encode()
        s.sendall(head + b"q" * (size if send is None else send))
        out = b""
        while chunk := s.recv(1 << 16):
            out += chunk
    return me, out


@pytest.fixture(scope="module")
def sensor():
    from tracer.kernel.program import Program
    from tracer.sensors.proxy import ProxySensor

    s = ProxySensor()
    bpf = Program([s]).compile()
    s.attach(bpf)
    assert s.attached == ["tcp_rcv_space_adjust", "sock_send_length"] and s.unavailable is None
    yield s
    s.detach()
    bpf.cleanup()
    assert _held_by_me() == (set(), set())


def _held_by_me() -> tuple[set, set]:
    """BPF links and programs this process holds (its fds): exactly ours,
    whatever other engineers' tracers attach meanwhile."""
    progs = set()
    for fd in os.listdir("/proc/self/fdinfo"):
        try:
            with open(f"/proc/self/fdinfo/{fd}") as f:
                progs |= {int(line.split()[1]) for line in f if line.startswith("prog_id:")}
        except OSError:
            continue
    return link_ids_held_by(os.getpid()), progs


def _links(sensor, relay: Relay, backend: Backend) -> ProxyLinks:
    proxies = {relay.proc.pid: DockerProxy(relay.proc.pid, "tcp", relay.host, relay.port, backend.host, backend.port)}
    links = ProxyLinks()
    read_links(sensor.bpf["proxy_links"], proxies, links)
    assert len(sensor.bpf["proxy_links"]) == 0, "taken by the batch lookup-and-delete"
    return links


@pytest.mark.parametrize("mode, family", [("splice", socket.AF_INET), ("rw", socket.AF_INET),
                                          ("splice", socket.AF_INET6)])
def test_a_relayed_connection_is_linked_to_its_backend_connection(sensor, mode, family):
    backend = Backend(family)
    relay = Relay(mode, family, backend)
    try:
        sensor.set_pids([relay.proc.pid])
        read_links(sensor.bpf["proxy_links"], {}, ProxyLinks())  # whatever an earlier case left
        # 300 kB up: given to the backend socket in several sends (16 pipe
        # buffers per sock_sendmsg); the reply's last bytes come with the
        # backend's FIN, taken by the same splice.
        me, reply = _exchange(relay.host, relay.port, 300_000, 777)
        assert reply == b"r" * 777
        time.sleep(0.2)
        links = _links(sensor, relay, backend)
        assert [link.client[0] for link in links.links] == [me], links.links
        link = links.links[0]
        assert link.pid == relay.proc.pid and link.client[1] == (relay.host, relay.port)
        assert link.backend == (list(backend.peers)[0], (backend.host, backend.port)), "the relay's own connection"
    finally:
        sensor.set_pids([])
        relay.close()
        backend.close()


@pytest.mark.parametrize("mode", ["splice", "rw"])
def test_bytes_that_come_with_the_fin_are_linked(sensor, mode):
    """A backend that speaks first and closes: the relay takes its bytes
    and its FIN in one splice (tcp_read_sock counts the FIN in
    copied_seq), or in one recv and a last one that returns 0; either way
    the bytes given on are the bytes taken, and the only relay is linked."""
    backend = Backend(socket.AF_INET, banner=4321)
    relay = Relay(mode, socket.AF_INET, backend)
    try:
        sensor.set_pids([relay.proc.pid])
        read_links(sensor.bpf["proxy_links"], {}, ProxyLinks())
        family = socket.AF_INET
        with socket.socket(family) as c:
            c.settimeout(10)
            c.connect((relay.host, relay.port))
            me = c.getsockname()[:2]
            got = b""
            while chunk := c.recv(1 << 16):
                got += chunk
        assert got == b"b" * 4321
        time.sleep(0.2)
        links = _links(sensor, relay, backend).links
        assert [(link.client[0], link.backend[0]) for link in links] == [(me, list(backend.peers)[0])]
    finally:
        sensor.set_pids([])
        relay.close()
        backend.close()


@pytest.mark.parametrize("mode", ["splice", "rw"])
def test_a_reply_alone_links_even_when_the_backend_resets(sensor, mode):
    """The backend answers and closes with the request unread (a reset):
    the relay's request is cut short, so only the reply is relayed whole,
    its last bytes taken with the FIN, from a socket the reset closed by
    the time the bytes are given (its local port given back to the
    kernel). The link still names both connections exactly."""
    backend = Backend(socket.AF_INET, rude=True)
    relay = Relay(mode, socket.AF_INET, backend)
    try:
        sensor.set_pids([relay.proc.pid])
        read_links(sensor.bpf["proxy_links"], {}, ProxyLinks())
        try:
            me, _ = _exchange(relay.host, relay.port, 2_000_000, 555, send=100_000)
        except ConnectionResetError:
            pytest.skip("the reset reached the client before the reply (timing): nothing to check")
        time.sleep(0.2)
        links = _links(sensor, relay, backend).links
        assert [(link.client[0], link.backend[0]) for link in links] == [(me, list(backend.peers)[0])]
    finally:
        sensor.set_pids([])
        relay.close()
        backend.close()


def test_the_same_relay_by_a_process_that_is_not_a_proxy_is_not_looked_at(sensor):
    backend = Backend(socket.AF_INET)
    relay = Relay("splice", socket.AF_INET, backend)
    try:
        sensor.set_pids([relay.proc.pid + 1_000_000])  # some other pid: the relay is not a proxy
        read_links(sensor.bpf["proxy_links"], {}, ProxyLinks())
        sensor.bpf["px_socks"].clear()  # what the earlier cases' relays left
        sensor.bpf["px_relays"].clear()
        _exchange(relay.host, relay.port, 5000, 300)
        time.sleep(0.2)
        assert len(sensor.bpf["proxy_links"]) == 0
        assert len(sensor.bpf["px_socks"]) == 0 and len(sensor.bpf["px_relays"]) == 0, "not even remembered"
    finally:
        sensor.set_pids([])
        relay.close()
        backend.close()


def test_concurrent_clients_are_each_linked_to_their_own_backend_connection(sensor):
    """Eight clients at once through one relay, each with its own request
    size and reply size: each client connection is linked to exactly one
    backend connection, all different, and never to another client's."""
    backend = Backend(socket.AF_INET)
    relay = Relay("splice", socket.AF_INET, backend)
    try:
        sensor.set_pids([relay.proc.pid])
        read_links(sensor.bpf["proxy_links"], {}, ProxyLinks())
        results = {}

        def client(i):
            results[i] = _exchange(relay.host, relay.port, 700 + 1000 * i, 100 + 37 * i, hold=0.2)

        threads = [threading.Thread(target=client, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(20)
        assert all(results[i][1] == b"r" * (100 + 37 * i) for i in range(8))
        time.sleep(0.2)
        links = _links(sensor, relay, backend).links
        # The truth, joined by request size: which backend connection
        # carried which client's request.
        backend_of_size = {size: peer for peer, size in backend.peers.items()}
        truth = sorted((me, backend_of_size[700 + 1000 * i]) for i, (me, _) in results.items())
        assert sorted((link.client[0], link.backend[0]) for link in links) == truth
    finally:
        sensor.set_pids([])
        relay.close()
        backend.close()


# A proxy whose relays cross threads, as a Go proxy's do when a goroutine
# that took bytes blocks on a full send buffer and resumes on another OS
# thread: thread 2 relays A -> B once (10 bytes), then takes 5 more from A;
# thread 1 takes 5 from X and gives thread 2's 5 bytes (A's) to B. Thread
# 1's take (X) and give (B) match in count but belong to two relays.
CROSSED = r"""
import json, socket, sys, threading
srv = socket.socket()
srv.bind(("127.0.0.1", 0))
srv.listen(8)
def pair():
    near = socket.create_connection(srv.getsockname())
    far, _ = srv.accept()
    return near, far
(a_peer, a), (b, b_peer), (x_peer, x) = pair(), pair(), pair()
def on_thread(fn):
    t = threading.Thread(target=fn)
    t.start()
    t.join()
held = {}
print("ready", flush=True)
sys.stdin.readline()
a_peer.sendall(b"a" * 10)
on_thread(lambda: b.sendall(a.recv(10)))                  # thread 2's first relay: A -> B
a_peer.sendall(b"a" * 5)
x_peer.sendall(b"x" * 5)
on_thread(lambda: held.update(a=a.recv(5)))               # thread 2 takes 5 from A ...
on_thread(lambda: (x.recv(5), b.sendall(held["a"])))      # ... thread 1 takes 5 from X, gives A's to B
print(json.dumps({"a": a_peer.getsockname(), "b": b.getsockname(), "x": x_peer.getsockname(),
                  "server": srv.getsockname()}), flush=True)
sys.stdin.readline()
"""


def test_a_take_and_a_give_of_two_relays_on_one_thread_are_not_linked(sensor):
    """Thread 1's take from X and give to B have the same count but B's
    stream mirrors A's, not X's: A -> B is linked, X -> B is not."""
    proc = subprocess.Popen([sys.executable, "-c", CROSSED], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "ready"
        sensor.set_pids([proc.pid])
        read_links(sensor.bpf["proxy_links"], {}, ProxyLinks())
        proc.stdin.write("go\n")
        proc.stdin.flush()
        ends = {k: tuple(v) for k, v in json.loads(proc.stdout.readline()).items()}
        server = ends["server"]
        proxies = {proc.pid: DockerProxy(proc.pid, "tcp", *server, *server)}
        links = ProxyLinks()
        read_links(sensor.bpf["proxy_links"], proxies, links)
        pairs = {(link.client[0], link.backend[0]) for link in links.links}
        assert (ends["a"], ends["b"]) in pairs
        assert (ends["x"], ends["b"]) not in pairs, pairs
    finally:
        sensor.set_pids([])
        proc.kill()
        proc.wait()


def test_a_proxy_on_mptcp_sockets_is_told_not_linked(sensor, caplog):
    """MPTCP sockets (which the hooks cannot follow: no tcp_rcv_space_adjust
    on them) give no link, and the sensor says so, once."""
    if not Path("/proc/sys/net/mptcp/enabled").exists() or Path("/proc/sys/net/mptcp/enabled").read_text().strip() != "1":
        pytest.skip("no MPTCP on this kernel")
    backend = Backend(socket.AF_INET)
    relay = Relay("mptcp", socket.AF_INET, backend)
    try:
        sensor.set_pids([relay.proc.pid])
        read_links(sensor.bpf["proxy_links"], {}, ProxyLinks())
        sensor.bpf["px_unseen"].clear()
        sensor._warned_unseen = False
        sensor._unseen_looked_at = float("-inf")  # its map read is due now, not UNSEEN_EVERY_S after another test's
        _, reply = _exchange(relay.host, relay.port, 3000, 200)
        assert reply == b"r" * 200
        time.sleep(0.2)
        assert len(sensor.bpf["proxy_links"]) == 0
        with caplog.at_level(logging.WARNING):
            sensor.warn_unseen()
            sensor.warn_unseen()
        warnings = [r.getMessage() for r in caplog.records]
        assert len(warnings) == 1 and "MPTCP" in warnings[0], warnings
    finally:
        sensor.set_pids([])
        relay.close()
        backend.close()


def test_batch_take_reads_and_empties_a_full_map(sensor):
    """take_all on the real proxy_links map with more records than one
    batch: every record once, none left."""
    from tracer.kernel.bpf_syscall import take_all

    table = sensor.bpf["proxy_links"]
    for i in range(300):
        key = table.Key()
        key.inb.sport, key.out.dport, key.inb.proto = i, 80, 6
        table[key] = table.Leaf(pid=i)
    taken = take_all(table.map_fd, ctypes.sizeof(table.Key), ctypes.sizeof(table.Leaf), chunk=16)
    assert sorted(table.Leaf.from_buffer_copy(v).pid for _, v in taken) == list(range(300))
    assert len(table) == 0


@pytest.mark.parametrize("tracepoints, told", [
    # a tracepoint this kernel does not have: no attachment at all
    ((("tcp_rcv_space_adjust", "trc_px_recv"), ("sock_send_length_of_no_kernel", "trc_px_send")),
     "sock_send_length_of_no_kernel"),
    # the first attached, the second refused (a program the module does not have): the first taken off again
    ((("tcp_rcv_space_adjust", "trc_px_recv"), ("sock_send_length", "trc_px_no_such_program")),
     "cannot attach to sock_send_length"),
], ids=["tracepoint-missing", "attach-fails"])
def test_a_hook_that_cannot_be_had_is_told_and_nothing_stays(monkeypatch, caplog, tracepoints, told):
    """One warning naming what failed, no attachment left, and attach
    returns (tracing goes on without links)."""
    from tracer.kernel.program import Program
    from tracer.sensors import proxy as proxy_mod

    before = _held_by_me()  # (the module's sensor is attached meanwhile)
    monkeypatch.setattr(proxy_mod, "RAW_TRACEPOINTS", tracepoints)
    s = proxy_mod.ProxySensor()
    bpf = Program([s]).compile()
    try:
        with caplog.at_level(logging.WARNING):
            s.attach(bpf)
        assert s.attached == [] and told in s.unavailable
        assert [r.getMessage() for r in caplog.records] == [f"proxy links: {s.unavailable}"]
        assert len(_held_by_me()[0]) == len(before[0]), "no attachment left"
    finally:
        s.detach()
        bpf.cleanup()
    assert _held_by_me() == before


def test_trace_goes_on_without_the_tracepoint(lab):
    """`tracer trace` on a kernel without sock:sock_send_length (a name no
    kernel has stands in for it): one warning line saying so, exit 0, and
    the journeys still come: the host's request to 127.0.0.1:PORT through
    docker-proxy, both legs traced, unlinked."""
    from tests.e2e.tracing import REPO

    code = ("import sys; import tracer.sensors.proxy as p; "
            "p.RAW_TRACEPOINTS = (('tcp_rcv_space_adjust', 'trc_px_recv'), ('sock_send_length_of_no_kernel', 'trc_px_send')); "
            "from tracer.cli import main; sys.argv[0] = 'tracer'; main()")
    port = lab["port"]
    proc = subprocess.Popen([sys.executable, "-c", code, "trace", "--json", "--port", str(port), "--duration", "30"],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    err = []
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            line = proc.stderr.readline()
            if not line:
                break
            err.append(line)
            if "Ctrl-C to stop" in line:
                break
        assert any("Ctrl-C to stop" in line for line in err), "".join(err)
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            s.sendall(b"GET / HTTP/1.0\r\n\r\n")
            while s.recv(65536):
                pass
        time.sleep(0.5)
    finally:
        proc.send_signal(2)
        out, rest = proc.communicate(timeout=60)
    stderr = "".join(err) + rest
    assert proc.returncode == 0, stderr
    warned = [line for line in stderr.splitlines() if "sock_send_length_of_no_kernel" in line]
    assert len(warned) == 1 and "not joined" in warned[0], stderr
    assert "Traceback" not in stderr
    journeys = [json.loads(line) for line in out.splitlines() if line.strip()]
    backend_leg = [j for j in journeys if any(h["dst"].endswith(f":{lab['container_port']}") for h in j["hops"])]
    client_leg = [j for j in journeys if any(h["dst"] == f"127.0.0.1:{port}" for h in j["hops"])]
    assert client_leg and backend_leg, [j["hops"][0] for j in journeys][:5]
    assert not any(j.get("proxy") for j in journeys), "no links without the sensor"

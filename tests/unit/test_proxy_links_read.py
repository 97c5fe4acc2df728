"""Reading the kernel's docker-proxy links (bpf/proxy.c proxy_links) when
the batch lookup-and-delete fails part way (ENOMEM in the kernel's batch
op, say): a fault injected at the bpf() call. Before, the OSError ended
the whole trace/record run with a bare 'tracer: error: Cannot allocate
memory', and the links taken by the chunks before it (already deleted
from the kernel's map) were lost."""

from __future__ import annotations

import ctypes
import errno
import logging
import struct
from types import SimpleNamespace

import pytest

from tracer import addresses
from tracer.docker_proxies import DockerProxies
from tracer.kernel import bpf_syscall
from tracer.proxies import DockerProxy, ProxyLinks, read_links


class Addr(ctypes.Structure):
    _fields_ = [("hi", ctypes.c_uint64), ("lo", ctypes.c_uint64)]


class Flow(ctypes.Structure):
    _fields_ = [("saddr", Addr), ("daddr", Addr), ("sport", ctypes.c_uint16), ("dport", ctypes.c_uint16)]


class Key(ctypes.Structure):
    _fields_ = [("inb", Flow), ("out", Flow)]


class Leaf(ctypes.Structure):
    _fields_ = [("pid", ctypes.c_uint32), ("pad", ctypes.c_uint32)]


PROXY = DockerProxy(7, "tcp", "0.0.0.0", 8000, "172.17.0.2", 8080)


def _addr(ip: str) -> Addr:
    return Addr(*struct.unpack("<QQ", addresses.packed(ip)))


def _flow(src: tuple[str, int], dst: tuple[str, int]) -> Flow:
    return Flow(_addr(src[0]), _addr(dst[0]), ctypes.c_uint16(struct.unpack("<H", struct.pack(">H", src[1]))[0]),
                struct.unpack("<H", struct.pack(">H", dst[1]))[0])


def _entry(client_port: int) -> tuple[bytes, bytes]:
    """The record of one relayed request: client -> proxy's host port, proxy -> container."""
    key = Key(_flow(("198.18.0.2", client_port), ("198.18.0.1", 8000)),
              _flow(("172.17.0.1", 30000 + client_port % 30000), ("172.17.0.2", 8080)))
    return bytes(key), bytes(Leaf(PROXY.pid))


class FakeMap:
    """bpf(BPF_MAP_LOOKUP_AND_DELETE_BATCH) on a hash map held here: takes up
    to `count` entries a call into the caller's buffers; the calls numbered
    in ``failing`` fail with ENOMEM instead, taking nothing."""

    def __init__(self, entries: list[tuple[bytes, bytes]], failing: set[int]) -> None:
        self.entries, self.failing, self.calls = list(entries), failing, 0

    def __call__(self, cmd: int, attr) -> int:
        assert cmd == bpf_syscall.BPF_MAP_LOOKUP_AND_DELETE_BATCH
        self.calls += 1
        if self.calls in self.failing:
            raise OSError(errno.ENOMEM, "bpf(cmd=25): Cannot allocate memory")
        _, _, keys, values, count, _ = struct.unpack_from("=QQQQII", attr, 0)
        taken, self.entries = self.entries[:count], self.entries[count:]
        for i, (k, v) in enumerate(taken):
            ctypes.memmove(keys + i * len(k), k, len(k))
            ctypes.memmove(values + i * len(v), v, len(v))
        struct.pack_into("=I", attr, 32, len(taken))
        if not self.entries:
            raise OSError(errno.ENOENT, "bpf(cmd=25): No such file or directory")
        return 0


def _table() -> SimpleNamespace:
    return SimpleNamespace(Key=Key, Leaf=Leaf, map_fd=99)


def test_take_all_keeps_what_it_took_before_a_failed_call(monkeypatch):
    fake = FakeMap([_entry(p) for p in range(1000, 1100)], failing={2})
    monkeypatch.setattr(bpf_syscall, "bpf", fake)
    with pytest.raises(bpf_syscall.TakeFailed) as failed:
        bpf_syscall.take_all(99, ctypes.sizeof(Key), ctypes.sizeof(Leaf))
    assert failed.value.errno == errno.ENOMEM and failed.value.strerror == "Cannot allocate memory"
    assert len(failed.value.taken) == 64  # the first chunk, gone from the map
    assert len(fake.entries) == 36
    assert bpf_syscall.take_all(99, ctypes.sizeof(Key), ctypes.sizeof(Leaf)) == [_entry(p) for p in range(1064, 1100)]


def test_a_failed_read_of_the_links_warns_once_keeps_what_was_taken_and_retries(monkeypatch, caplog):
    fake = FakeMap([_entry(p) for p in range(1000, 1100)], failing={2, 3})
    monkeypatch.setattr(bpf_syscall, "bpf", fake)
    proxies = DockerProxies(SimpleNamespace(ports=(8000,), containers=()), enabled=False)
    proxies.by_pid = {PROXY.pid: PROXY}
    inventory = SimpleNamespace(by_ip=lambda ip: SimpleNamespace(name="web") if ip == "172.17.0.2" else None)
    bpf = {"proxy_links": _table(), "px_links_made": LinksMade()}  # the count stays: takes after a failed one are retries
    with caplog.at_level(logging.WARNING):
        first = proxies.read_links(bpf, inventory)  # chunk 1 taken, chunk 2 fails
        second = proxies.read_links(bpf, inventory)  # fails again at once
        third = proxies.read_links(bpf, inventory)  # the rest
    assert len(first) == 64 and second == [] and len(third) == 36
    ports = sorted(link.client[0][1] for link in first + third)
    assert ports == list(range(1000, 1100))  # every link, none lost
    assert {link.container for link in first + third} == {"web"}
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1, warnings
    assert "docker-proxy links" in warnings[0] and "proxy_links" in warnings[0]
    assert "Cannot allocate memory" in warnings[0] and "64 links taken" in warnings[0]
    assert proxies.read_failures == 2


def test_without_a_handler_the_error_is_raised_and_what_was_taken_kept(monkeypatch):
    monkeypatch.setattr(bpf_syscall, "bpf", FakeMap([_entry(p) for p in range(1000, 1100)], failing={2}))
    links = ProxyLinks()
    with pytest.raises(OSError):
        read_links(_table(), {PROXY.pid: PROXY}, links)
    assert len(links.take_new()) == 64


class LinksMade:
    """bpf/proxy.c's px_links_made as BCC shows it: one u64 at index 0."""

    def __init__(self) -> None:
        self.n = 0

    def __getitem__(self, index):
        assert index.value == 0
        return ctypes.c_uint64(self.n)


def test_the_links_are_taken_only_when_the_kernel_made_some(monkeypatch):
    """A take walks the kernel's whole map (~0.25 ms a pass, empty or not):
    it runs only when px_links_made moved since the last whole take, and
    again after a take that failed part way, whatever the count says."""
    fake = FakeMap([_entry(p) for p in range(1000, 1010)], failing=set())
    monkeypatch.setattr(bpf_syscall, "bpf", fake)
    proxies = DockerProxies(SimpleNamespace(ports=(8000,), containers=()), enabled=False)
    proxies.by_pid = {PROXY.pid: PROXY}
    inventory = SimpleNamespace(by_ip=lambda ip: None)
    made = LinksMade()
    made.n = 10
    bpf = {"proxy_links": _table(), "px_links_made": made}
    assert len(proxies.read_links(bpf, inventory)) == 10  # the first pass takes whatever is there
    calls = fake.calls
    fake.entries = [_entry(p) for p in range(2000, 2005)]  # in the map, not counted yet
    assert proxies.read_links(bpf, inventory) == [] and fake.calls == calls  # no bpf() call
    made.n = 15
    assert len(proxies.read_links(bpf, inventory)) == 5 and fake.calls > calls
    fake.entries, fake.failing = [_entry(p) for p in range(3000, 3100)], {fake.calls + 2}
    made.n = 115
    first = proxies.read_links(bpf, inventory)  # one chunk, then the failure
    assert len(first) == 64 and proxies.read_failures == 1
    rest = proxies.read_links(bpf, inventory)  # the count has not moved: taken all the same
    assert len(rest) == 36
    calls = fake.calls
    assert proxies.read_links(bpf, inventory) == [] and fake.calls == calls


def test_the_mptcp_warning_reads_its_count_every_few_seconds_not_every_pass(monkeypatch, caplog):
    from tracer.sensors import proxy as proxy_sensor

    reads = []

    class Unseen:
        def __getitem__(self, index):
            reads.append(index.value)
            return ctypes.c_uint64(len(reads) - 1)  # 0 sends at the first read, then some

    clock = [100.0]
    monkeypatch.setattr(proxy_sensor.time, "monotonic", lambda: clock[0])
    sensor = proxy_sensor.ProxySensor()
    sensor.bpf, sensor.attached = {"px_unseen": Unseen()}, ["sock_recvmsg"]
    with caplog.at_level(logging.WARNING):
        sensor.warn_unseen()  # read: no send
        sensor.warn_unseen()  # too soon: not read
        clock[0] += proxy_sensor.UNSEEN_EVERY_S
        sensor.warn_unseen()  # read: sends, warned
        clock[0] += proxy_sensor.UNSEEN_EVERY_S
        sensor.warn_unseen()  # warned once: never read again
    assert reads == [0, 0]
    assert [r.getMessage() for r in caplog.records if "MPTCP" in r.getMessage()] != []
    assert len(caplog.records) == 1


"""The lab's client side: the ``tracer-client`` netns and its veth to the host
(IPv4 and IPv6), and the busybox httpd it runs for the container's outbound
path, known by pid and start time so that only it is ever killed."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path

from tracer import own_env
from tracer.lab_base import (CLIENT_ADDRESS, CLIENT_ADDRESS6, CLIENT_IFACE, HOST_ADDRESS, HOST_ADDRESS6, HOST_IFACE,
                             LabError, NETNS, PREFIX_LEN, PREFIX_LEN6, SERVER_INDEX, SERVER_PORT, SERVER_ROOT, _ip_json,
                             _log, _run, busybox)

# --------------------------------------------------------------------------- process identity


def _proc_start_time(pid: int) -> int | None:
    """Start time (clock ticks since boot) of a live, non-zombie process, else None."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()
    if fields[0] in ("Z", "X"):
        return None
    return int(fields[19])


def _netns_inode(path: str) -> int | None:
    try:
        return os.stat(path).st_ino
    except OSError:
        return None


def _server_alive(state: dict) -> bool:
    pid, start = state.get("server_pid"), state.get("server_start_time")
    if not pid or _proc_start_time(pid) != start:
        return False
    return _netns_inode(f"/proc/{pid}/ns/net") == _netns_inode(f"/run/netns/{NETNS}")


def _kill_server(state: dict) -> int | None:
    """Kill the recorded server, and only it: pid plus start time must match."""
    pid, start = state.get("server_pid"), state.get("server_start_time")
    if not pid or start is None or _proc_start_time(pid) != start:
        return None
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:
        with contextlib.suppress(ChildProcessError, OSError):
            os.waitpid(pid, os.WNOHANG)  # reaps it when it happens to be our child
        if _proc_start_time(pid) != start:
            return pid
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    return pid


# --------------------------------------------------------------------------- netns + veth


def _netns_exists() -> bool:
    return os.path.exists(f"/run/netns/{NETNS}")


def _has_addr(links: list[dict], addr: str) -> bool:
    for link in links:
        for a in link.get("addr_info", []):
            if a.get("family") == "inet" and a.get("local") == addr and a.get("prefixlen") == PREFIX_LEN:
                return True
    return False


def _has_addr6(links: list[dict], addr: str) -> bool:
    return any(a.get("family") == "inet6" and a.get("local") == addr and a.get("prefixlen") == PREFIX_LEN6
               for link in links for a in link.get("addr_info", []))


def _ipv6_ready() -> bool:
    return (_netns_exists() and _has_addr6(_ip_json("addr", "show", "dev", HOST_IFACE), HOST_ADDRESS6)
            and _has_addr6(_ip_json("addr", "show", "dev", CLIENT_IFACE, netns=NETNS), CLIENT_ADDRESS6))


def _ensure_ipv6() -> None:
    """The IPv6 addresses on the lab veth, added in place (a running lab gets
    them without being rebuilt). Static, without DAD, no link-local address,
    no autoconfiguration: no router solicitations or DAD probes in traces."""
    for netns, iface, addr in ((None, HOST_IFACE, HOST_ADDRESS6), (NETNS, CLIENT_IFACE, CLIENT_ADDRESS6)):
        if _has_addr6(_ip_json("addr", "show", "dev", iface, netns=netns), addr):
            continue
        _log(f"adding {addr}/{PREFIX_LEN6} to {iface}" + (f" in {netns}" if netns else ""))
        for key, value in (("accept_ra", "0"), ("autoconf", "0"), ("addr_gen_mode", "1"), ("disable_ipv6", "0")):
            _sysctl_write(f"/proc/sys/net/ipv6/conf/{iface}/{key}", value, netns)
        _run((["ip", "-n", netns] if netns else ["ip"]) + ["addr", "add", f"{addr}/{PREFIX_LEN6}", "dev", iface, "nodad"])


def _netns_problems() -> list[str]:
    if not _netns_exists():
        return [f"netns {NETNS} missing"]
    problems = []
    host = _ip_json("addr", "show", "dev", HOST_IFACE)
    if not _has_addr(host, HOST_ADDRESS):
        problems.append(f"{HOST_IFACE} missing or without {HOST_ADDRESS}/{PREFIX_LEN}")
    elif "UP" not in host[0].get("flags", []):
        problems.append(f"{HOST_IFACE} is down")
    client = _ip_json("addr", "show", "dev", CLIENT_IFACE, netns=NETNS)
    if not _has_addr(client, CLIENT_ADDRESS):
        problems.append(f"{CLIENT_IFACE} in {NETNS} missing or without {CLIENT_ADDRESS}/{PREFIX_LEN}")
    elif "UP" not in client[0].get("flags", []):
        problems.append(f"{CLIENT_IFACE} is down")
    routes = _ip_json("-4", "route", "show", netns=NETNS)
    defaults = [r for r in routes if r.get("dst") == "default"]
    if len(defaults) != 1 or defaults[0].get("gateway") != HOST_ADDRESS:
        problems.append(f"{NETNS} has no default route via {HOST_ADDRESS}")
    return problems


def _sysctl_write(path: str, value: str, netns: str | None = None) -> None:
    if netns is None:
        with contextlib.suppress(OSError):
            Path(path).write_text(value + "\n")
        return
    # /proc/sys/net shows the netns of the process that opens it
    _run(["ip", "netns", "exec", netns, busybox(), "sh", "-c", f"echo '{value}' > {path}"], check=False)


def _create_netns() -> None:
    _run(["ip", "netns", "add", NETNS])
    _run(["ip", "link", "add", HOST_IFACE, "type", "veth", "peer", "name", CLIENT_IFACE, "netns", NETNS])
    # IPv6 off on the lab veth: no RS/DAD/MLD noise in traces
    _sysctl_write(f"/proc/sys/net/ipv6/conf/{HOST_IFACE}/disable_ipv6", "1")
    _run(["ip", "addr", "add", f"{HOST_ADDRESS}/{PREFIX_LEN}", "dev", HOST_IFACE])
    _run(["ip", "link", "set", HOST_IFACE, "up"])
    n = ["ip", "-n", NETNS]
    _sysctl_write(f"/proc/sys/net/ipv6/conf/{CLIENT_IFACE}/disable_ipv6", "1", NETNS)
    _run(n + ["link", "set", "lo", "up"])
    _run(n + ["addr", "add", f"{CLIENT_ADDRESS}/{PREFIX_LEN}", "dev", CLIENT_IFACE])
    _run(n + ["link", "set", CLIENT_IFACE, "up"])
    _run(n + ["route", "add", "default", "via", HOST_ADDRESS])


def _tune_client_netns() -> None:
    # busybox httpd closes after each request: load tests open a connection per
    # request, so reuse TIME_WAIT ports and widen the ephemeral range
    _sysctl_write("/proc/sys/net/ipv4/tcp_tw_reuse", "1", NETNS)
    _sysctl_write("/proc/sys/net/ipv4/ip_local_port_range", "1024 65000", NETNS)


def _delete_netns() -> list[str]:
    removed = []
    if _netns_exists():
        _run(["ip", "netns", "del", NETNS], check=False)
        removed.append(f"netns {NETNS}")
    # a process still inside the netns keeps it (and the veth) alive: drop the veth explicitly
    if _ip_json("link", "show", "dev", HOST_IFACE):
        _run(["ip", "link", "del", HOST_IFACE], check=False)
        removed.append(f"link {HOST_IFACE}")
    return removed


def _start_server() -> dict:
    SERVER_ROOT.mkdir(parents=True, exist_ok=True)
    (SERVER_ROOT / "index.html").write_text(SERVER_INDEX)
    bb = busybox()
    # the sh exits at once, so the server is never our child (no zombie, no wait)
    cp = _run([
        "sh", "-c",
        f"setsid ip netns exec {NETNS} {bb} httpd -f -p {CLIENT_ADDRESS}:{SERVER_PORT} -h {SERVER_ROOT} "
        "</dev/null >/dev/null 2>&1 & echo $!",
    ], env=own_env.child_env())  # it outlives us: without tracer's own variables
    pid = int(cp.stdout.strip())
    start = _proc_start_time(pid)
    if start is None:
        raise LabError(f"the client-netns server (pid {pid}) exited at once")
    return {"server_pid": pid, "server_start_time": start}

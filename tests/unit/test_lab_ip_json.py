"""`ip -j` output as iproute2 writes it: an interface name's control
characters raw inside JSON strings (any user can name a link so)."""

from __future__ import annotations

import subprocess

from tracer import lab_base


def test_ip_json_takes_raw_control_characters(monkeypatch):
    out = '[{"ifindex":7,"ifname":"a\x1b[7mb","link_index":3}]\n'
    monkeypatch.setattr(lab_base, "_run", lambda cmd, check=False: subprocess.CompletedProcess(cmd, 0, out, ""))
    assert lab_base._ip_json("link", "show") == [{"ifindex": 7, "ifname": "a\x1b[7mb", "link_index": 3}]

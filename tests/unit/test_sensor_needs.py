"""Sensors say which doctor capabilities they need (tracer/sensors/all.py):
doctor derives what is required from them instead of a list of its own."""

from __future__ import annotations

from tracer.sensors import all as sensors
from tracer.sensors.drops import DropSensor
from tracer.sensors.proxy import ProxySensor


def test_a_capability_an_always_attached_sensor_needs_is_required():
    assert sensors.needed("tc") is True and sensors.needed("netfilter_links") is True
    assert sensors.needed("raw_tracepoints") is True  # the drop sensor's skb:kfree_skb
    assert sensors.needed("docker") is None  # no sensor's: doctor's own word stands


def test_an_optional_sensor_alone_makes_nothing_required():
    assert ProxySensor.optional and not DropSensor.optional
    only_proxy = [c for c in ProxySensor.needs if [s for s in sensors.SENSORS if c in s.needs] == [ProxySensor]]
    assert only_proxy == ["socket_tracepoints"]  # raw_tracepoints: the drop sensor's too
    for capability in only_proxy:
        assert sensors.needed(capability) is False


def test_no_sensor_needs_perf_tracepoints():
    """The proxy sensor's syscall tracepoints are gone: nothing attaches a
    perf tracepoint, so doctor does not require them."""
    assert sensors.needed("tracepoints") is None


def test_readiness_names_what_is_missing():
    have = {"tc": True, "netfilter_links": False, "raw_tracepoints": True, "socket_tracepoints": False}
    rows = {r["name"]: r for r in sensors.readiness(have)}
    assert rows["tc"]["ok"] and not rows["netfilter"]["ok"] and rows["netfilter"]["missing"] == ["netfilter_links"]
    assert not rows["proxy"]["ok"] and rows["proxy"]["missing"] == ["socket_tracepoints"] and rows["drop"]["ok"]
    assert set(rows) == {"tc", "netfilter", "drop", "proxy"}

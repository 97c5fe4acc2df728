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
    only_proxy = [c for c in ("tracepoints", "raw_tracepoints") if [s for s in sensors.SENSORS if c in s.needs] == [ProxySensor]]
    for capability in only_proxy:
        assert sensors.needed(capability) is False


def test_readiness_names_what_is_missing():
    have = {"tc": True, "netfilter_links": False, "raw_tracepoints": True, "tracepoints": True}
    rows = {r["name"]: r for r in sensors.readiness(have)}
    assert rows["tc"]["ok"] and not rows["netfilter"]["ok"] and rows["netfilter"]["missing"] == ["netfilter_links"]
    assert set(rows) == {"tc", "netfilter", "drop", "proxy"}

"""Every sensor, written once: what the session builds from (session._plan)
and what `tracer doctor` asks which capabilities tracing needs."""

from __future__ import annotations

from typing import Mapping

from tracer.sensors.base import Sensor
from tracer.sensors.drops import DropSensor
from tracer.sensors.netfilter import NetfilterSensor
from tracer.sensors.proxy import ProxySensor
from tracer.sensors.tc import TcSensor

SENSORS: tuple[type[Sensor], ...] = (TcSensor, NetfilterSensor, DropSensor, ProxySensor)


def needed(capability: str) -> bool | None:
    """Whether tracing cannot work without this capability because a sensor
    it always attaches needs it; None when no sensor names it."""
    users = [s for s in SENSORS if capability in s.needs]
    return any(not s.optional for s in users) if users else None


def readiness(have: Mapping[str, bool]) -> list[dict]:
    """Each sensor: whether it can attach here, and what it lacks."""
    return [{"name": s.name, "ok": not s.missing(have), "needs": list(s.needs), "missing": s.missing(have),
             "optional": s.optional} for s in SENSORS]

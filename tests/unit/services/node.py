"""One node's live ports, in memory, for building services in unit tests."""

from __future__ import annotations

from dataclasses import dataclass

from thinghub.bus.memory import MemoryBus, MemoryCounter, MemoryLocks, MemoryPresence
from thinghub.devices.links import LocalLinks
from thinghub.ports import Clock

NODE_ID = "node-1"


@dataclass(frozen=True, slots=True)
class Node:
    bus: MemoryBus
    presence: MemoryPresence
    links: LocalLinks  # the DeviceChannel: no device is connected until a test attaches one
    locks: MemoryLocks
    counter: MemoryCounter


def node(clock: Clock) -> Node:
    presence = MemoryPresence(clock)
    return Node(
        MemoryBus(), presence, LocalLinks(presence, NODE_ID), MemoryLocks(), MemoryCounter()
    )

"""Live fan-out planning: one device event in, the `data` messages and who gets each out.

Pure: the store's index answers who watches (SessionStore.audience), payloads.py builds each
message once per group of sessions that get the same bytes. The Socket.IO adapter (live.py)
sends each Emit to the rooms named by its session ids. The events here are the face's own
view of what the core bus carries; wiring maps bus events onto them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from itertools import chain
from typing import Any, Protocol

from thinghub.faces.ux4iot.grants import SubscriptionType
from thinghub.faces.ux4iot.payloads import (
    connection_state_data,
    d2c_data,
    device_twin_data,
    telemetry_data,
)
from thinghub.faces.ux4iot.sessions import Audience

__all__ = [
    "ConnectionChanged",
    "Emit",
    "LiveEvent",
    "MessageArrived",
    "TwinChanged",
    "plan",
]


@dataclass(frozen=True, slots=True)
class MessageArrived:
    """A device-to-cloud message: telemetry (the body's keys) and d2c (the raw body)."""

    account_id: str
    device_id: str
    ts: float
    body: Any  # decoded JSON, text, or None for a body that is not UTF-8


@dataclass(frozen=True, slots=True)
class ConnectionChanged:
    account_id: str
    device_id: str
    ts: float
    is_connected: bool


@dataclass(frozen=True, slots=True)
class TwinChanged:
    """Reported or desired changed; carries the whole twin document (payloads.twin_document)."""

    account_id: str
    device_id: str
    ts: float
    twin: Mapping[str, Any]


LiveEvent = MessageArrived | ConnectionChanged | TwinChanged


@dataclass(frozen=True, slots=True)
class Emit:
    """One `data` payload and the sessions (Socket.IO rooms) to send it to."""

    payload: dict[str, Any]
    session_ids: tuple[str, ...]


class _Audiences(Protocol):
    def audience(
        self, account_id: str, device_id: str, kind: SubscriptionType
    ) -> tuple[Audience, ...]: ...


def plan(store: _Audiences, event: LiveEvent) -> list[Emit]:
    """The messages one event produces; empty when nobody watches that device."""
    out: list[Emit] = []
    if isinstance(event, MessageArrived):
        out.extend(_telemetry(store, event))
        d2c = store.audience(event.account_id, event.device_id, SubscriptionType.D2C_MESSAGES)
        if d2c and event.body is not None:
            payload = d2c_data(event.device_id, event.ts, event.body)
            out.append(Emit(payload, _merge(d2c)))
    elif isinstance(event, ConnectionChanged):
        kind = SubscriptionType.CONNECTION_STATE
        for group in store.audience(event.account_id, event.device_id, kind):
            payload = connection_state_data(
                event.device_id, event.ts, event.is_connected, group.protocol
            )
            out.append(Emit(payload, group.session_ids))
    else:
        twin = store.audience(event.account_id, event.device_id, SubscriptionType.DEVICE_TWIN)
        if twin:
            payload = device_twin_data(event.device_id, event.ts, event.twin)
            out.append(Emit(payload, _merge(twin)))
    return out


def _telemetry(store: _Audiences, event: MessageArrived) -> list[Emit]:
    """Groups whose keys differ only in keys this message lacks get the same payload: they
    are merged by the keys actually present, so each distinct payload is built once."""
    body = event.body
    if not isinstance(body, dict) or not body:
        return []
    every = frozenset(body)
    picked: dict[frozenset[str], list[tuple[str, ...]]] = {}
    for group in store.audience(event.account_id, event.device_id, SubscriptionType.TELEMETRY):
        keys = every if group.telemetry_keys is None else group.telemetry_keys.intersection(body)
        if keys:
            picked.setdefault(keys, []).append(group.session_ids)
    out = []
    for keys, parts in picked.items():
        telemetry = body if keys is every else {k: v for k, v in body.items() if k in keys}
        ids = parts[0] if len(parts) == 1 else tuple(chain.from_iterable(parts))
        out.append(Emit(telemetry_data(event.device_id, event.ts, telemetry), ids))
    return out


def _merge(groups: tuple[Audience, ...]) -> tuple[str, ...]:
    """Kinds whose payload is the same for v2 and v4 go out as one message."""
    if len(groups) == 1:
        return groups[0].session_ids
    return tuple(sid for group in groups for sid in group.session_ids)

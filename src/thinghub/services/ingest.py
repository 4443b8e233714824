"""Ingest: device-to-cloud telemetry from any adapter into the one store and the live bus.

A message is stored once, whole; its numeric fields also become observations. A policy (e.g.
a device template) may reject a message: it is then recorded as a rejected-telemetry event
with the reason, not stored as telemetry.
"""

from __future__ import annotations

import logging
from typing import Any, Protocol

from thinghub.domain.errors import Invalid, TooLarge
from thinghub.domain.events import EventType
from thinghub.domain.model import Device
from thinghub.domain.telemetry import TelemetryMessage, decode_body, observations_of
from thinghub.ports import Bus, Clock, Store
from thinghub.services.events import EventService
from thinghub.services.registry import Registry

__all__ = ["IngestService", "TelemetryPolicy"]

logger = logging.getLogger(__name__)


class TelemetryPolicy(Protocol):
    async def check(self, device: Device, message: TelemetryMessage) -> str | None:
        """None to accept, else the reason the message is rejected."""


class IngestService:
    def __init__(
        self,
        store: Store,
        clock: Clock,
        bus: Bus,
        registry: Registry,
        events: EventService,
        *,
        max_payload_bytes: int,
    ) -> None:
        self.store = store
        self.clock = clock
        self.bus = bus
        self.registry = registry
        self.events = events
        self.max_payload_bytes = max_payload_bytes
        self.policies: list[TelemetryPolicy] = []

    def build(
        self,
        device: Device,
        raw: bytes,
        *,
        properties: dict[str, str] | None = None,
        message_id: str | None = None,
        correlation_id: str | None = None,
        content_type: str | None = None,
        content_encoding: str | None = None,
        component: str | None = None,
        source: str = "mqtt",
        body: Any = None,
        enqueued_at: float | None = None,
    ) -> TelemetryMessage:
        if len(raw) > self.max_payload_bytes:
            raise TooLarge(
                f"telemetry is {len(raw)} bytes; the limit is {self.max_payload_bytes}",
                field="body",
            )
        return TelemetryMessage(
            account_id=device.account_id,
            device_id=device.id,
            enqueued_at=self.clock.now() if enqueued_at is None else enqueued_at,
            body=decode_body(raw, content_type) if body is None else body,
            raw=raw,
            properties=properties or {},
            message_id=message_id,
            correlation_id=correlation_id,
            content_type=content_type,
            content_encoding=content_encoding,
            component=component,
            project=device.project,
            deployment=device.deployment,
            source=source,
        )

    async def ingest(self, device: Device, message: TelemetryMessage) -> bool:
        """Store one message (and its observations); publish it live.

        Returns False when it was a duplicate (same message id) and so not stored again.
        Raises Invalid when a policy rejects it (the rejection is recorded as an event).
        """
        for policy in self.policies:
            reason = await policy.check(device, message)
            if reason is not None:
                await self.events.record(
                    device,
                    EventType.TELEMETRY_REJECTED,
                    {"reason": reason, "messageId": message.message_id, "body": message.body},
                )
                raise Invalid(reason, field="body")
        observations = observations_of(message)
        (is_new,) = await self.store.append_telemetry([message], observations)
        await self.registry.touch(device)
        if is_new:
            await self.bus.publish(
                f"telemetry.{device.account_id}",
                {
                    "deviceId": device.id,
                    "ts": message.enqueued_at,
                    "body": message.body,
                    "properties": message.properties,
                    "component": message.component,
                },
            )
        return is_new

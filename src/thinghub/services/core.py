"""The core: every service wired over one store, bus, clock and link registry."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from thinghub.domain.errors import NotFound
from thinghub.domain.json_depth import DEFAULT_MAX_JSON_DEPTH
from thinghub.domain.model import Account, Device, Retention
from thinghub.ports import Bus, Clock, Stores
from thinghub.services.auth import AuthService
from thinghub.services.c2d import C2DService
from thinghub.services.commands import CommandService
from thinghub.services.device_auth import DeviceAuth
from thinghub.services.events import EventService
from thinghub.services.ingest import IngestService
from thinghub.services.links import LinkRegistry
from thinghub.services.provisioning import ProvisioningService
from thinghub.services.queries import QueryService
from thinghub.services.registry import Registry
from thinghub.services.retention import RetentionService
from thinghub.services.templates import TemplateService
from thinghub.services.twins import TwinService

__all__ = ["Core", "CoreOptions"]


DEFAULT_RETENTION = Retention(telemetry_days=30.0, events_days=30.0)


@dataclass(frozen=True, slots=True)
class CoreOptions:
    jwt_ttl_s: int = 3600
    max_payload_bytes: int = 262_144
    max_request_bytes: int = 4_194_304
    max_json_depth: int = DEFAULT_MAX_JSON_DEPTH
    method_timeout_max_s: float = 300.0
    command_ttl_s: float = 86_400.0
    page_max: int = 1000
    hub_hostname: str = "localhost"
    retention: Retention = DEFAULT_RETENTION
    retention_interval_s: float = 3600.0
    retention_batch_rows: int = 5000
    public_url: str | None = None  # base of absolute links; None: links are relative
    ingest_queue_max_bytes: int = 67_108_864


class Core:
    def __init__(self, stores: Stores, bus: Bus, clock: Clock, options: CoreOptions) -> None:
        self.stores = stores
        self.bus = bus
        self.clock = clock
        self.options = options
        self.links = LinkRegistry()
        self.auth = AuthService(stores, clock, jwt_ttl_s=options.jwt_ttl_s)
        self.events = EventService(stores, bus, clock)
        self.registry = Registry(stores, clock, self.events)
        self.twins = TwinService(stores, clock, self.events, self.links, bus)
        self.registry.on_delete.append(self.twins.forget)
        self.ingest = IngestService(
            stores,
            clock,
            bus,
            self.registry,
            self.events,
            max_payload_bytes=options.max_payload_bytes,
            max_queued_bytes=options.ingest_queue_max_bytes,
            max_json_depth=options.max_json_depth,
        )
        self.queries = QueryService(stores)
        self.commands = CommandService(
            stores,
            clock,
            self.links,
            max_timeout_s=options.method_timeout_max_s,
            ttl_s=options.command_ttl_s,
        )

        self.c2d = C2DService(stores, clock, self.links)
        # Device templates (DTDL): telemetry of a templated device must match its template.
        self.templates = TemplateService(stores, clock, self.registry)
        self.ingest.policies.append(self.templates.policy)
        self.provisioning = ProvisioningService(stores, clock, self.registry)
        # One device authenticator for every device adapter, so its verified-token cache is one.
        self.device_auth = DeviceAuth(self.registry, clock)
        self.retention = RetentionService(
            stores,
            clock,
            self.registry,
            options.retention,
            interval_s=options.retention_interval_s,
            batch_rows=options.retention_batch_rows,
        )
        self._accounts: dict[str, Account] = {}

    async def start(self) -> None:
        await self.stores.start()
        await self.auth.start()

    async def account(self, account_id: str) -> Account:
        """An account by id (cached: its id, name and id scope never change; read its
        retention through `retention`, which asks the store)."""
        account = self._accounts.get(account_id)
        if account is None:
            account = await self.stores.accounts.get(account_id)
            if account is None:
                raise NotFound(f"account {account_id!r} not found", field="account")
            self._accounts[account_id] = account
        return account

    # The hub CA, when the composition root provides one (issue_certificate needs it).
    certificate_issuer: Any = None

    @property
    def ca_pem(self) -> str | None:
        return None if self.certificate_issuer is None else str(self.certificate_issuer.ca_pem)

    async def issue_certificate(self, device: Device) -> tuple[str, str]:
        """An X.509 client certificate + key for a device, signed by the hub CA: CN the device
        id, OU its account (the hub and DPS check both)."""
        if self.certificate_issuer is None:
            raise RuntimeError("no certificate authority configured")
        issue = self.certificate_issuer.issue_device_certificate
        cert, key = await asyncio.to_thread(issue, device.id, organizational_unit=device.account_id)
        return str(cert), str(key)

    async def disconnect(self, device_id: str) -> None:
        """Close the device's live connection, if any (after it is deleted or disabled)."""
        link = self.links.get(device_id)
        if link is not None:
            await link.close()

"""Services: the bundle of use cases that adapters (faces, device adapters, the CLI) call.

The only door to the core. It holds services and nothing else: no store, no device links,
no clock. The composition root (app.py `build_services`) builds each service over the ports
it needs and hands adapters this bundle.
"""

from __future__ import annotations

from dataclasses import dataclass

from thinghub.services.auth import AuthService
from thinghub.services.c2d import C2DService
from thinghub.services.certificates import CertificateService
from thinghub.services.claims import ClaimService
from thinghub.services.commands import CommandService
from thinghub.services.console_sessions import ConsoleSessionService
from thinghub.services.device_auth import DeviceAuth
from thinghub.services.device_groups import DeviceGroupService
from thinghub.services.events import EventService
from thinghub.services.files import FileService
from thinghub.services.ingest import IngestService
from thinghub.services.jobs import JobService
from thinghub.services.live import LiveService
from thinghub.services.products import ProductService
from thinghub.services.properties import PropertyService
from thinghub.services.provisioning import ProvisioningService
from thinghub.services.queries import QueryService
from thinghub.services.registry import Registry
from thinghub.services.retention import RetentionService
from thinghub.services.scheduled_jobs import ScheduledJobService
from thinghub.services.sessions import SessionService
from thinghub.services.templates import TemplateService
from thinghub.services.twins import TwinService

__all__ = ["Services"]


@dataclass(frozen=True, slots=True)
class Services:
    auth: AuthService
    registry: Registry
    twins: TwinService
    events: EventService
    ingest: IngestService
    queries: QueryService
    commands: CommandService
    c2d: C2DService
    templates: TemplateService
    provisioning: ProvisioningService
    # One device authenticator for every device adapter, so its verified-token cache is one.
    device_auth: DeviceAuth
    retention: RetentionService
    certificates: CertificateService
    sessions: SessionService
    # Live events for push channels (ux4iot, iTwin subscriptions, the console, streams).
    live: LiveService
    # The Ioto face: products, device claims (register, claim, provision, release) and files.
    products: ProductService
    claims: ClaimService
    files: FileService
    # One property of a device, read or written (IoT Central, ux4iot, iTwin).
    properties: PropertyService
    # Saved device filters, and jobs that change every device of one.
    device_groups: DeviceGroupService
    jobs: JobService
    scheduled_jobs: ScheduledJobService  # run by the face that reads their groups
    # The web console's sign-in sessions, shared by every node on the database.
    console_sessions: ConsoleSessionService

    async def start(self) -> None:
        """What services need before the first request (the store is started already)."""
        await self.auth.start()
        await self.claims.start()
        await self.files.start()

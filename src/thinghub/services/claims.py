"""Ioto device claims: register, claim, release, get, find and provision, over domain.claims.

Theory of operation
-------------------
`domain.claims` is the state machine (unclaimed -> claimed -> provisioned -> back); this
service stores each registration (`stores.claims`), changes it one call at a time per claim
id (the lock `ioto/{claim id}`), and keeps the rest of thinghub in step:

- claiming (a user's claim, or a register that names the product's account) creates the
  thinghub device of that id in the claiming account, in the project named after the
  product, so it shows on every other face; a device of that id that exists already is a
  Conflict (thinghub device ids are global);
- provisioning issues a client certificate from the hub CA (OU ``ioto/{account}``, so it
  opens the Ioto MQTT dialect only) and records its fingerprint: only the latest
  certificate of a provisioned device connects (`device_for_certificate`);
- releasing (or deleting the device on another face, which releases it) returns the
  registration to unclaimed, tells a connected device (`provision/release`, then its
  connection is closed: DeviceChannel.disconnect with revoked=True), deletes the thinghub
  device, and runs `on_released` (the file service drops the device's files).

Device calls authenticate with the device token (security.device_tokens), derived from the
server master key and the claim generation, so register can hand out the same token again
and a release voids it.

Where devices reach this server (the API URL in register answers, the MQTT port in provision
answers) is known once the listeners are bound: the composition root calls `bind`.
"""

from __future__ import annotations

import base64
import binascii
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace

from thinghub.domain import claims
from thinghub.domain.claims import IotoRole, Registration
from thinghub.domain.errors import Conflict, Error, Forbidden, Invalid, NotFound, Unauthorized
from thinghub.domain.model import Device, Principal
from thinghub.domain.products import Product
from thinghub.ports import Clock, DeviceChannel, Locks, Stores
from thinghub.security.ca import device_identity_of, fingerprint_sha256
from thinghub.security.device_tokens import DeviceTokenError, DeviceTokenIssuer, DeviceTokenSubject
from thinghub.services.certificates import CertificateService
from thinghub.services.master_key import load_master_key
from thinghub.services.products import ProductService
from thinghub.services.registry import Registry

__all__ = [
    "API_PATH",
    "CERTIFICATE_UNIT_PREFIX",
    "ClaimService",
    "ClaimedDevice",
    "FoundPage",
    "ProvisionBlocked",
    "Provisioned",
    "Registered",
]

logger = logging.getLogger(__name__)

# Where the Ioto device API is served on the HTTP port (the face's prefix): the `api` that
# register answers give claimed devices is the server's base URL and this path.
API_PATH = "/ioto/api"
# The OU of an Ioto certificate: "ioto/{account id}" (the hub dialect wants the bare id).
CERTIFICATE_UNIT_PREFIX = "ioto/"
# The attribute that marks a thinghub device as an Ioto device (its product id in it).
DEVICE_ATTRIBUTE = "ioto"
MAX_CURSOR_CHARS = 512
# The device record's `accessed` is written at most this often per device by device calls.
ACCESSED_WRITE_S = 60.0


@dataclass(frozen=True, slots=True)
class ClaimedDevice:
    """A registration with what its Device record needs besides it."""

    registration: Registration
    product: Product | None
    last_activity_at: float | None = None

    @property
    def accessed_at(self) -> float:
        """The later of its last API call and its last MQTT activity."""
        return max(self.registration.accessed_at, self.last_activity_at or 0.0)


@dataclass(frozen=True, slots=True)
class Registered:
    """A register call's outcome: claimed ones carry the token and where to call next."""

    registration: Registration
    token: str | None
    api_url: str


@dataclass(frozen=True, slots=True)
class Provisioned:
    registration: Registration
    certificate: str  # PEM
    key: str  # PEM
    endpoint: str  # the MQTT host name
    port: int


@dataclass(frozen=True, slots=True)
class ProvisionBlocked:
    delay_s: int


@dataclass(frozen=True, slots=True)
class FoundPage:
    devices: list[ClaimedDevice]
    next_cursor: str | None
    prev_cursor: str | None


class ClaimService:
    def __init__(
        self,
        stores: Stores,
        clock: Clock,
        *,
        registry: Registry,
        products: ProductService,
        certificates: CertificateService,
        channel: DeviceChannel,
        locks: Locks,
        cloud_name: str,
        region: str,
        hub_hostname: str,
    ) -> None:
        self.stores = stores
        self.clock = clock
        self.registry = registry
        self.products = products
        self.certificates = certificates
        self.channel = channel
        self.locks = locks
        self.cloud_name = cloud_name
        self.region = region
        self.hub_hostname = hub_hostname
        self.api_url = ""
        self.mqtt_port = 0
        self._tokens: DeviceTokenIssuer | None = None
        # Called with (account id, device id) after a device was released.
        self.on_released: list[Callable[[str, str], Awaitable[None]]] = []
        registry.on_deleting.append(self._device_deleting)

    async def start(self) -> None:
        self._tokens = DeviceTokenIssuer(await load_master_key(self.stores, self.clock))

    def bind(self, *, base_url: str, mqtt_port: int) -> None:
        """Where devices reach this server: its base URL (`api` in register answers is that
        and API_PATH) and the MQTT port (`port` in provision answers)."""
        self.api_url = base_url.rstrip("/") + API_PATH
        self.mqtt_port = mqtt_port

    @property
    def tokens(self) -> DeviceTokenIssuer:
        if self._tokens is None:
            raise RuntimeError("ClaimService.start() was not called")
        return self._tokens

    # -- register (a device, with its product token) -----------------------------------------

    async def register(
        self,
        product: Product,
        claim_id: str,
        *,
        test: bool = False,
        account: str | None = None,
        version: str | None = None,
    ) -> Registered:
        """Record a device's register call; a claimed device gets its token back.

        `account` (the agent's auto-claim) claims the device at once when it names the
        product's account, by id or by name.

        Raises:
            Invalid: a malformed claim id.
            Conflict: the claim id is registered with another product, or (auto-claim) a
                thinghub device of that id exists already.
        """
        claim_id = claims.parse_claim_id(claim_id)
        auto = await self._auto_claim_account(product, account)
        async with self.locks.hold(_lock(claim_id)):
            current = await self.stores.claims.get(claim_id)
            updated = claims.register(
                current,
                device_id=claim_id,
                product_id=product.id,
                product_account_id=product.account_id,
                now=self.clock.now(),
                test=test,
                auto_claim_account=auto,
                version=version,
            )
            if not claims.is_claimed(current) and claims.is_claimed(updated):
                await self._create_device(updated, product, created_by="ioto-register")
            await self.stores.claims.put(updated)
        token = self._token(updated) if claims.is_claimed(updated) else None
        return Registered(updated, token, self.api_url)

    async def _auto_claim_account(self, product: Product, account: str | None) -> str | None:
        if account is None:
            return None
        if account == product.account_id:
            return account
        owner = await self.stores.accounts.get(product.account_id)
        return product.account_id if owner is not None and owner.name == account else None

    def _token(self, registration: Registration) -> str:
        if registration.account_id is None:
            raise ValueError("an unclaimed device has no token")
        return self.tokens.token(
            DeviceTokenSubject(registration.id, registration.account_id, registration.generation)
        )

    # -- claim, release, get, find (users) ---------------------------------------------------

    async def claim(
        self, principal: Principal, claim_id: str, *, test: bool = False
    ) -> ClaimedDevice:
        """Claim a registered device into the caller's account (role claimDevice).

        Raises:
            Forbidden: the role does not hold claimDevice.
            NotFound: unknown, of another account's product, claimed by another account, or
                of a product (project) the caller does not see.
            Conflict: a thinghub device of that id exists already.
        """
        claims.require(principal.role.value, IotoRole.CLAIM_DEVICE)
        claim_id = claims.parse_claim_id(claim_id)
        async with self.locks.hold(_lock(claim_id)):
            current = await self.stores.claims.get(claim_id)
            product = await self._visible_product(principal, current)
            updated = claims.claim(
                current if product is not None else None,
                account_id=principal.account_id,
                now=self.clock.now(),
                test=test,
                claim_id=claim_id,
            )
            if updated is not current and product is not None:
                await self._create_device(updated, product, created_by=principal.subject)
                await self.stores.claims.put(updated)
                logger.info("ioto device %s claimed by account %s", claim_id, principal.account_id)
        return await self._claimed(updated, product)

    async def release(self, principal: Principal, claim_id: str) -> ClaimedDevice:
        """Release a device of the caller's account back to unclaimed (role releaseDevice).

        Raises:
            Forbidden: the role does not hold releaseDevice.
            NotFound: unknown, unclaimed, claimed by another account, or not visible.
        """
        claims.require(principal.role.value, IotoRole.RELEASE_DEVICE)
        claim_id = claims.parse_claim_id(claim_id)
        async with self.locks.hold(_lock(claim_id)):
            current = await self.stores.claims.get(claim_id)
            product = await self._visible_product(principal, current)
            before = await self._claimed(current, product) if current is not None else None
            released = claims.release(
                current if product is not None else None,
                account_id=principal.account_id,
                now=self.clock.now(),
                claim_id=claim_id,
            )
            await self.stores.claims.put(released.registration)
        # Outside the lock: deleting the device calls _device_deleting, which takes it.
        await self._after_release(released.registration.id, principal.account_id)
        device = await self.registry.find(claim_id)
        if device is not None and device.account_id == principal.account_id:
            await self.registry.delete_device(principal, claim_id)
        assert before is not None  # release refused an unknown registration
        return before

    async def _device_deleting(self, device: Device) -> None:
        """A thinghub device is being deleted (on any face): an Ioto device is released."""
        if DEVICE_ATTRIBUTE not in device.attributes:
            return
        async with self.locks.hold(_lock(device.id)):
            current = await self.stores.claims.get(device.id)
            if current is None or current.account_id != device.account_id:
                return  # released already (a release deletes its device)
            released = claims.release(current, account_id=device.account_id, now=self.clock.now())
            await self.stores.claims.put(released.registration)
        await self._after_release(device.id, device.account_id)

    async def _after_release(self, device_id: str, account_id: str) -> None:
        # A connected device hears provision/release, then its connection closes.
        await self.channel.disconnect(device_id, revoked=True)
        for callback in self.on_released:
            await callback(account_id, device_id)
        logger.info("ioto device %s released from account %s", device_id, account_id)

    async def get(
        self, principal: Principal, claim_id: str, *, account_id: str | None = None
    ) -> ClaimedDevice:
        """A device of the caller's account (role user; `account_id` of another: owner).

        Raises:
            NotFound: not claimed by the account, or not visible to the caller.
        """
        claims.require(principal.role.value, IotoRole.USER)
        account = claims.check_account_param(
            principal.role.value, caller_account=principal.account_id, requested=account_id
        )
        claim_id = claims.parse_claim_id(claim_id)
        current = await self.stores.claims.get(claim_id)
        if current is None or current.account_id != account:
            raise NotFound(f"no device {claim_id!r}", field="id")
        product = await self._visible_product(principal, current)
        if product is None:
            raise NotFound(f"no device {claim_id!r}", field="id")
        return await self._claimed(current, product)

    async def find(
        self,
        principal: Principal,
        *,
        claim_id: str | None = None,
        account_id: str | None = None,
        product_id: str | None = None,
        limit: int,
        next_cursor: str | None = None,
        prev_cursor: str | None = None,
        index: str | None = None,
    ) -> FoundPage:
        """The caller's account's devices, by claim id, a page of `limit` at a time.

        `next_cursor` / `prev_cursor` are this method's own cursors (opaque). `index` is an
        owner option the vendor has for its two database indexes; thinghub has one, so it
        is checked and otherwise changes nothing.
        """
        claims.require(principal.role.value, IotoRole.USER)
        if index is not None:
            claims.require(principal.role.value, IotoRole.OWNER)
        account = claims.check_account_param(
            principal.role.value, caller_account=principal.account_id, requested=account_id
        )
        if claim_id is not None:
            try:
                one = await self.get(principal, claim_id)
            except NotFound:
                return FoundPage([], None, None)
            if product_id is not None and one.registration.product_id != product_id:
                return FoundPage([], None, None)
            return FoundPage([one], None, None)
        if next_cursor is not None and prev_cursor is not None:
            raise Invalid("give next or prev, not both", field="prev")
        after = _open_cursor(next_cursor, "n", "next")
        before = _open_cursor(prev_cursor, "p", "prev")
        visible = await self._visible_products(principal, account)
        if product_id is not None:
            if product_id not in visible:
                return FoundPage([], None, None)
            visible = {product_id: visible[product_id]}
        only = next(iter(visible)) if len(visible) == 1 else None
        if not visible:
            return FoundPage([], None, None)
        found = await self.stores.claims.find(
            account, product_id=only, after=after, before=before, limit=limit + 1
        )
        rows = [r for r in found if r.product_id in visible]
        if before is not None:
            has_more_before = len(rows) > limit
            rows = rows[-limit:]
            has_more_after = True
        else:
            has_more_after = len(rows) > limit
            rows = rows[:limit]
            has_more_before = after is not None
        devices = [await self._claimed(r, visible[r.product_id]) for r in rows]
        next_out = _cursor("n", rows[-1].id) if rows and has_more_after else None
        prev_out = _cursor("p", rows[0].id) if rows and has_more_before else None
        return FoundPage(devices, next_out, prev_out)

    async def _visible_products(self, principal: Principal, account_id: str) -> dict[str, Product]:
        products = await self.products.list_in(account_id)
        return {p.id: p for p in products if principal.sees(p.name)}

    async def _visible_product(
        self, principal: Principal, current: Registration | None
    ) -> Product | None:
        """The product of a registration of the caller's account's products, if the caller
        sees its project; None otherwise (the registration then looks absent)."""
        if current is None:
            return None
        product = await self.products.get(current.product_id)
        if product is None or product.account_id != principal.account_id:
            return None
        return product if principal.sees(product.name) else None

    async def _claimed(self, registration: Registration, product: Product | None) -> ClaimedDevice:
        device = await self.registry.find(registration.id)
        seen = None
        if device is not None and device.account_id == registration.account_id:
            seen = device.last_activity_at
        return ClaimedDevice(registration, product, seen)

    async def _create_device(
        self, registration: Registration, product: Product, *, created_by: str
    ) -> None:
        assert registration.account_id is not None
        try:
            await self.registry.register(
                registration.account_id,
                name=registration.id,
                device_id=registration.id,
                project=product.name,
                attributes={DEVICE_ATTRIBUTE: {"productId": product.id}},
                created_by=created_by,
            )
        except Conflict as exc:
            raise Conflict(
                f"a thinghub device {registration.id!r} exists already; delete it or use "
                "another claim id",
                field="id",
            ) from exc

    # -- device calls (device token) ---------------------------------------------------------

    async def authenticate_device(self, token: str | None) -> Registration:
        """The claimed device a device token names, if the token is its current one.

        Raises:
            Unauthorized: no token, a forged or malformed one, or one a release voided.
        """
        if not token:
            raise Unauthorized("a device token is required", field="Authorization")
        try:
            subject = self.tokens.open(token)
        except DeviceTokenError as exc:
            raise Unauthorized(str(exc), field="Authorization") from exc
        current = await self.stores.claims.get(subject.device_id)
        if not claims.accepts_token(
            current, account_id=subject.account_id, generation=subject.generation
        ):
            raise Unauthorized("the device token is no longer valid", field="Authorization")
        assert current is not None
        return current

    async def touch(self, registration: Registration) -> None:
        """Note a device call (`accessed`), at most once a minute per device."""
        now = self.clock.now()
        if now - registration.accessed_at < ACCESSED_WRITE_S:
            return
        async with self.locks.hold(_lock(registration.id)):
            current = await self.stores.claims.get(registration.id)
            if current is not None and current.generation == registration.generation:
                await self.stores.claims.put(_accessed(current, now))

    async def update_checked(self, registration: Registration, version: str | None) -> None:
        """Record the agent's update check: its firmware `version` and when it checked."""
        async with self.locks.hold(_lock(registration.id)):
            current = await self.stores.claims.get(registration.id)
            if current is not None and current.generation == registration.generation:
                updated = claims.update_checked(current, version=version, now=self.clock.now())
                await self.stores.claims.put(updated)

    async def provision(
        self, registration: Registration, claim_id: str
    ) -> Provisioned | ProvisionBlocked:
        """Issue the device its MQTT certificate, unless it provisioned too often lately.

        Raises:
            Forbidden: `claim_id` is another device's.
            Unauthorized: the registration changed since the token was checked (released).
        """
        if claim_id != registration.id:
            raise Forbidden(
                f"device {registration.id!r} may not provision {claim_id[:128]!r}", field="id"
            )
        async with self.locks.hold(_lock(registration.id)):
            current = await self.stores.claims.get(registration.id)
            if current is None or current.generation != registration.generation:
                raise Unauthorized("the device token is no longer valid", field="Authorization")
            now = self.clock.now()
            delay = claims.provision_delay(current, now=now)
            if delay is not None:
                logger.info("ioto device %s: provisioning again in %d s", current.id, delay)
                return ProvisionBlocked(delay)
            device = await self.registry.find(current.id)
            if device is None or device.account_id != current.account_id:
                raise NotFound(f"no device {current.id!r}", field="id")
            certificate, key = await self.certificates.issue(
                device, unit=CERTIFICATE_UNIT_PREFIX + device.account_id
            )
            updated = claims.provisioned(
                current, fingerprint=fingerprint_sha256(certificate), now=now
            )
            await self.stores.claims.put(updated)
        logger.info("ioto device %s provisioned", updated.id)
        return Provisioned(updated, certificate, key, self.hub_hostname, self.mqtt_port)

    async def registration(self, claim_id: str) -> Registration | None:
        return await self.stores.claims.get(claim_id)

    async def device_for_certificate(
        self, client_id: str, der: bytes
    ) -> tuple[Device, Registration]:
        """The device an MQTT client certificate opens: its latest one, while provisioned.

        Raises:
            Unauthorized: another CN, a certificate not (or no longer) the device's, or a
                device that is unknown, of another account or disabled.
        """
        try:
            cn, ou = device_identity_of(der)
            fingerprint = fingerprint_sha256(der)
        except ValueError as exc:
            raise Unauthorized(
                "the client certificate cannot be read", field="certificate"
            ) from exc
        if cn != client_id:
            raise Unauthorized(f"certificate CN {cn!r} is not the client id", field="clientId")
        current = await self.stores.claims.get(client_id)
        if not claims.accepts_certificate(current, fingerprint) or current is None:
            raise Unauthorized(
                "the certificate is not the device's current one", field="certificate"
            )
        if ou != CERTIFICATE_UNIT_PREFIX + str(current.account_id):
            raise Unauthorized(
                "the certificate was issued for another account", field="certificate"
            )
        device = await self.registry.find(client_id)
        if device is None or device.account_id != current.account_id:
            raise Unauthorized("unknown device", field="clientId")
        if not device.enabled:
            raise Unauthorized(f"device {client_id!r} is disabled", field="clientId")
        return device, current


def _accessed(registration: Registration, now: float) -> Registration:
    return replace(registration, accessed_at=now)


def _lock(claim_id: str) -> str:
    return f"ioto/{claim_id}"


def _cursor(kind: str, claim_id: str) -> str:
    return base64.urlsafe_b64encode(f"{kind}:{claim_id}".encode()).decode().rstrip("=")


def _open_cursor(value: str | None, kind: str, field: str) -> str | None:
    if value is None:
        return None
    bad = Invalid(f"{field} is not a cursor this API gave out", field=field)
    if len(value) > MAX_CURSOR_CHARS:
        raise bad
    try:
        raw = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError) as exc:
        raise bad from exc
    prefix, _, claim_id = raw.partition(":")
    if prefix != kind:
        raise bad
    try:
        return claims.parse_claim_id(claim_id, field)
    except Error as exc:
        raise bad from exc

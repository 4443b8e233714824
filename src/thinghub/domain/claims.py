"""Ioto device claims: register, claim, provision and release as one state machine (pure rules).

Theory of operation
-------------------
An Ioto device is known by its claim id from its first register call on. Its
``Registration`` moves through three states; every change is a pure function of the current
registration (or None), the call's arguments and ``now``, returning the new registration:

    (none) --register--> UNCLAIMED --claim--> CLAIMED --provision--> PROVISIONED
                            ^                    |                        |
                            +------release-------+--------release---------+

The table ``TRANSITIONS`` below is the whole machine: for each (state, event) the next state,
or the refusal. Refusals are domain errors: NOT_FOUND (unknown, or claimed by another
account: other accounts' devices look absent) and NOT_CLAIMED (a device call before a claim).

- register: records the device (UNCLAIMED), or refreshes ``accessed``. The answer is
  "claimed" (api + token) in CLAIMED and PROVISIONED. A register body naming the product's
  own account (``account``) claims at once (the agent's auto-claim).
- claim: only the account that owns the device's product may claim it (products live in an
  account in thinghub; there is no builder/cloud split). Claiming again is a no-op.
- provision: issues a certificate (done by the caller) and records its fingerprint; only
  that certificate is accepted on MQTT afterwards. Re-provisioning is allowed, but at most
  ``PROVISIONS_PER_WINDOW`` times per ``PROVISION_WINDOW_S``; beyond that the answer is
  ``{error, delay}`` (the agent waits ``delay`` seconds). One retry is always possible (an
  answer lost on the way); a third certificate inside a minute is a device in a loop.
- release: back to UNCLAIMED. The claim ``generation`` changes on every claim and release,
  which voids the device token (``security.device_tokens``); the certificate fingerprint is
  cleared (the caller closes the MQTT connection after sending provision/release); temporary
  credentials issued before the release stop working (``accepts_credentials``).

Roles: the vendor's roles map onto thinghub's core roles in ``ROLE_GRANTS``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, replace
from enum import StrEnum

from thinghub.domain.clock import format_ts_ms
from thinghub.domain.errors import Conflict, Forbidden, Invalid, NotFound
from thinghub.domain.ids import ID_PATTERN

__all__ = [
    "MAX_CLAIM_ID_CHARS",
    "PROVISIONS_PER_WINDOW",
    "PROVISION_WINDOW_S",
    "ROLE_GRANTS",
    "TRANSITIONS",
    "ClaimState",
    "Event",
    "IotoRole",
    "Refusal",
    "Registration",
    "Released",
    "accepts_certificate",
    "accepts_credentials",
    "accepts_token",
    "check_account_param",
    "claim",
    "is_claimed",
    "may",
    "parse_claim_id",
    "provision_delay",
    "provisioned",
    "register",
    "release",
    "require",
    "update_checked",
]

# At most two certificates per device per minute: the first, and one retry.
PROVISION_WINDOW_S = 60.0
PROVISIONS_PER_WINDOW = 2
# A claim id becomes the device id, an MQTT topic level and its certificate's common name,
# which X.509 caps at 64 characters (RFC 5280 ub-common-name).
MAX_CLAIM_ID_CHARS = 64


def parse_claim_id(value: object, field: str = "id") -> str:
    """A claim id: 1 to 64 characters of A-Z a-z 0-9 . _ : - (a device id that fits a CN).

    Raises:
        Invalid: naming the field.
    """
    if (
        not isinstance(value, str)
        or len(value) > MAX_CLAIM_ID_CHARS
        or not ID_PATTERN.fullmatch(value)
    ):
        raise Invalid(
            f"{field} must be 1 to {MAX_CLAIM_ID_CHARS} characters from A-Z a-z 0-9 . _ : -, "
            f"got {str(value)[:80]!r}",
            field=field,
        )
    return value


class ClaimState(StrEnum):
    UNCLAIMED = "unclaimed"
    CLAIMED = "claimed"
    PROVISIONED = "provisioned"


class Event(StrEnum):
    REGISTER = "register"
    CLAIM = "claim"
    PROVISION = "provision"
    RELEASE = "release"


class Refusal(StrEnum):
    NOT_FOUND = "not found"
    NOT_CLAIMED = "not claimed"


_U, _C, _P = ClaimState.UNCLAIMED, ClaimState.CLAIMED, ClaimState.PROVISIONED

# (state before, event) -> state after, or why it is refused. None = no registration yet.
# fmt: off
TRANSITIONS: Mapping[tuple[ClaimState | None, Event], ClaimState | Refusal] = {
    (None, Event.REGISTER): _U,   (None, Event.CLAIM): Refusal.NOT_FOUND,
    (None, Event.PROVISION): Refusal.NOT_FOUND, (None, Event.RELEASE): Refusal.NOT_FOUND,
    (_U, Event.REGISTER): _U,     (_U, Event.CLAIM): _C,
    (_U, Event.PROVISION): Refusal.NOT_CLAIMED, (_U, Event.RELEASE): Refusal.NOT_CLAIMED,
    (_C, Event.REGISTER): _C,     (_C, Event.CLAIM): _C,
    (_C, Event.PROVISION): _P,    (_C, Event.RELEASE): _U,
    (_P, Event.REGISTER): _P,     (_P, Event.CLAIM): _P,
    (_P, Event.PROVISION): _P,    (_P, Event.RELEASE): _U,
}
# fmt: on


@dataclass(frozen=True, slots=True)
class Registration:
    """An Ioto device as the builder knows it, claimed or not.

    Attributes:
        id: the claim id (the device id once claimed).
        product_id, product_account_id: the product it registered with, and the account
            that owns that product (the only account that may claim it).
        generation: changes on every claim and release (device tokens carry it).
        account_id, claimed_at: set while claimed.
        certificate_fingerprint: SHA-256 of the one certificate accepted on MQTT.
        provisions: times of recent provisions (within PROVISION_WINDOW_S), oldest first.
    """

    id: str
    product_id: str
    product_account_id: str
    state: ClaimState
    registered_at: float
    accessed_at: float
    generation: int = 0
    account_id: str | None = None
    claimed_at: float | None = None
    test: bool = False
    version: str | None = None
    checked: str | None = None
    certificate_fingerprint: str | None = None
    provisions: tuple[float, ...] = ()


def _next(current: Registration | None, event: Event, device_id: str) -> ClaimState:
    outcome = TRANSITIONS[(current.state if current else None, event)]
    if outcome is Refusal.NOT_FOUND:
        raise NotFound(f"no device {device_id!r}", field="id")
    if outcome is Refusal.NOT_CLAIMED:
        raise NotFound(f"device {device_id!r} is not claimed", field="id")
    return outcome


def is_claimed(current: Registration | None) -> bool:
    """Whether register answers "claimed" (api + token)."""
    return current is not None and current.state is not ClaimState.UNCLAIMED


def register(
    current: Registration | None,
    *,
    device_id: str,
    product_id: str,
    product_account_id: str,
    now: float,
    test: bool = False,
    auto_claim_account: str | None = None,
    version: str | None = None,
) -> Registration:
    """A register call (product token already checked by the caller).

    Raises:
        Conflict: the claim id is registered with another product.
    """
    if current is not None and current.product_id != product_id:
        raise Conflict(f"claim id {device_id!r} is registered with another product", field="id")
    state = _next(current, Event.REGISTER, device_id)
    if current is None:
        current = Registration(
            id=device_id,
            product_id=product_id,
            product_account_id=product_account_id,
            state=state,
            registered_at=now,
            accessed_at=now,
            test=test,
            version=version,
        )
    else:
        current = replace(current, accessed_at=now, version=version or current.version)
    if auto_claim_account is not None and auto_claim_account == product_account_id:
        current = claim(current, account_id=auto_claim_account, now=now, test=test)
    return current


def claim(
    current: Registration | None,
    *,
    account_id: str,
    now: float,
    test: bool = False,
    claim_id: str = "",
) -> Registration:
    """Claim a device into ``account_id``; claiming one's own device again changes nothing.

    ``claim_id`` is the id the caller asked for, named in the NotFound message.

    Raises:
        NotFound: unknown, of another account's product, or claimed by another account.
    """
    if current is not None and current.product_account_id != account_id:
        current = None  # another account's device looks absent
    if current is not None and current.account_id not in (None, account_id):
        current = None
    state = _next(current, Event.CLAIM, claim_id if current is None else current.id)
    if current is None:  # pragma: no cover - _next refused already
        raise NotFound("no device", field="id")
    if current.state is not ClaimState.UNCLAIMED:
        return current
    return replace(
        current,
        state=state,
        account_id=account_id,
        claimed_at=now,
        test=test,
        generation=current.generation + 1,
        accessed_at=now,
    )


@dataclass(frozen=True, slots=True)
class Released:
    registration: Registration
    was_provisioned: bool  # if so: send provision/release, close its MQTT connection
    account_id: str  # the account it left


def release(
    current: Registration | None, *, account_id: str, now: float, claim_id: str = ""
) -> Released:
    """Release a device from ``account_id`` back to unclaimed.

    ``claim_id`` is the id the caller asked for, named in the NotFound message.

    Raises:
        NotFound: unknown, unclaimed, or claimed by another account.
    """
    if current is not None and current.account_id != account_id:
        current = None
    device_id = claim_id if current is None else current.id
    state = _next(current, Event.RELEASE, device_id)
    if current is None:  # pragma: no cover - _next refused already
        raise NotFound("no device", field="id")
    released = replace(
        current,
        state=state,
        account_id=None,
        claimed_at=None,
        certificate_fingerprint=None,
        provisions=(),
        generation=current.generation + 1,
        accessed_at=now,
    )
    return Released(released, current.state is ClaimState.PROVISIONED, account_id)


def accepts_token(current: Registration | None, *, account_id: str, generation: int) -> bool:
    """Whether a device token (its account and claim generation) is the current one."""
    return (
        current is not None
        and current.state is not ClaimState.UNCLAIMED
        and current.account_id == account_id
        and current.generation == generation
    )


def _recent(current: Registration, now: float) -> tuple[float, ...]:
    return tuple(t for t in current.provisions if now - t < PROVISION_WINDOW_S)


def provision_delay(current: Registration | None, *, now: float) -> int | None:
    """Seconds the device must wait before it may provision again, or None if it may now.

    Raises:
        NotFound: unknown or not claimed.
    """
    _next(current, Event.PROVISION, "" if current is None else current.id)
    if current is None:  # pragma: no cover - _next refused already
        raise NotFound("no device", field="id")
    recent = _recent(current, now)
    if len(recent) < PROVISIONS_PER_WINDOW:
        return None
    oldest = recent[-PROVISIONS_PER_WINDOW]
    return max(1, math.ceil(oldest + PROVISION_WINDOW_S - now))


def provisioned(current: Registration, *, fingerprint: str, now: float) -> Registration:
    """Record a certificate issued to the device; it replaces any earlier one.

    Raises:
        NotFound: unknown or not claimed.
        ValueError: called while provision_delay says to wait (a programming error).
    """
    if provision_delay(current, now=now) is not None:
        raise ValueError("provisioned() called inside the provisioning window")
    state = _next(current, Event.PROVISION, current.id)
    return replace(
        current,
        state=state,
        certificate_fingerprint=fingerprint,
        provisions=(*_recent(current, now), now),
        accessed_at=now,
    )


def update_checked(current: Registration, *, version: str | None, now: float) -> Registration:
    """Record the agent's update check: the firmware ``version`` it reports (kept when it
    reports none) and when it checked (``checked``, ISO 8601)."""
    return replace(
        current,
        version=version or current.version,
        checked=format_ts_ms(now),
        accessed_at=now,
    )


def accepts_certificate(current: Registration | None, fingerprint: str) -> bool:
    """Whether a client certificate may connect: the device's latest, while provisioned."""
    return (
        current is not None
        and current.state is ClaimState.PROVISIONED
        and current.certificate_fingerprint == fingerprint
    )


def accepts_credentials(current: Registration | None, *, account_id: str, issued_at: float) -> bool:
    """Whether temporary credentials issued at ``issued_at`` for ``account_id`` still hold.

    They must have been issued during the current claim: a release (or a release and a new
    claim) voids everything issued before it.
    """
    return (
        current is not None
        and current.state is not ClaimState.UNCLAIMED
        and current.account_id == account_id
        and current.claimed_at is not None
        and math.floor(current.claimed_at) <= issued_at
    )


# -- roles ------------------------------------------------------------------------------------


class IotoRole(StrEnum):
    """The roles the Ioto device API names for its calls."""

    USER = "user"  # get, find
    CLAIM_DEVICE = "claimDevice"  # claim
    RELEASE_DEVICE = "releaseDevice"  # release
    OWNER = "owner"  # get/find with accountId or index
    DEVICE = "device"  # provision, getCreds, getSignedUrl: a device token, not a user role


# thinghub's core roles (by name) and the Ioto roles each holds. Claiming and releasing change
# which devices the account has, which is device writing: operator and up (builder included),
# not viewer. "owner" is the account's administrator; in thinghub it still sees one account.
ROLE_GRANTS: Mapping[str, frozenset[IotoRole]] = {
    "admin": frozenset(
        {IotoRole.USER, IotoRole.CLAIM_DEVICE, IotoRole.RELEASE_DEVICE, IotoRole.OWNER}
    ),
    "builder": frozenset({IotoRole.USER, IotoRole.CLAIM_DEVICE, IotoRole.RELEASE_DEVICE}),
    "operator": frozenset({IotoRole.USER, IotoRole.CLAIM_DEVICE, IotoRole.RELEASE_DEVICE}),
    "viewer": frozenset({IotoRole.USER}),
}


def may(core_role: str, role: IotoRole) -> bool:
    return role in ROLE_GRANTS.get(str(core_role), frozenset())


def require(core_role: str, role: IotoRole) -> None:
    """Raise Forbidden unless a principal with ``core_role`` holds the Ioto ``role``."""
    if not may(core_role, role):
        raise Forbidden(f"role {str(core_role)!r} may not do this ({role.value})", field="role")


def check_account_param(core_role: str, *, caller_account: str, requested: str | None) -> str:
    """The account a get/find call looks in.

    ``accountId`` is an owner option. Naming one's own account is always fine; naming another
    needs the owner role, and even then finds nothing (accounts are isolated).

    Raises:
        Forbidden: another account named without the owner role.
        NotFound: another account named by an owner.
    """
    if requested is None or requested == caller_account:
        return caller_account
    require(core_role, IotoRole.OWNER)
    raise NotFound(f"no account {requested!r}", field="accountId")

"""Device certificates: X.509 client certificates signed by the hub's CA.

The CA is handed in at construction (the composition root loads or creates it); without one
(offline tools), issuing is refused.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Protocol

from thinghub.domain.model import Device, Principal
from thinghub.domain.roles import Permission
from thinghub.services.registry import Registry

__all__ = ["CertificateIssuer", "CertificateService", "DeviceCertificate"]


class CertificateIssuer(Protocol):
    """What a certificate authority offers this service (security.ca.CertificateAuthority)."""

    @property
    def ca_pem(self) -> str: ...

    def issue_device_certificate(
        self, common_name: str, *, organizational_unit: str | None = None
    ) -> tuple[str, str]: ...


@dataclass(frozen=True, slots=True)
class DeviceCertificate:
    """A device's client certificate, its private key and the CA that signed it (PEM)."""

    device_id: str
    certificate: str
    private_key: str
    ca_certificate: str


class CertificateService:
    def __init__(
        self, issuer: CertificateIssuer | None, *, registry: Registry | None = None
    ) -> None:
        self._issuer = issuer
        # Looks up the device of `issue_for` for its caller (None: offline tools, which call
        # `issue` with a device in hand).
        self._registry = registry

    async def issue_for(self, principal: Principal, device_id: str) -> DeviceCertificate:
        """Issue a client certificate for a device on behalf of `principal`
        (Permission.CERTIFICATES_ISSUE).

        Raises:
            Forbidden, NotFound: see Registry.device_for.
            RuntimeError: built without a CA or a registry.
        """
        if self._registry is None:
            raise RuntimeError("CertificateService was built without a registry")
        device = await self._registry.device_for(
            principal, device_id, Permission.CERTIFICATES_ISSUE
        )
        cert, key = await self.issue(device)
        return DeviceCertificate(device.id, cert, key, self.ca_pem or "")

    @property
    def ca_pem(self) -> str | None:
        """The hub CA certificate (PEM), which devices trust; None without a CA."""
        return None if self._issuer is None else self._issuer.ca_pem

    async def issue(self, device: Device, *, unit: str | None = None) -> tuple[str, str]:
        """A client certificate and its key (PEM) for a device, signed by the hub CA: CN the
        device id, OU its account (the hub and DPS check both). Key generation runs off the
        event loop.

        Args:
            unit: the OU instead of the account id. The Ioto face issues ``ioto/{account}``,
                which the hub dialect never takes for its own (its OU must be the account):
                an Ioto certificate opens the Ioto dialect only.
        """
        if self._issuer is None:
            raise RuntimeError("no certificate authority configured")
        issue = self._issuer.issue_device_certificate
        ou = device.account_id if unit is None else unit
        return await asyncio.to_thread(issue, device.id, organizational_unit=ou)

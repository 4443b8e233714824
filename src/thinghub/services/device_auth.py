"""Device authentication: SAS tokens signed with a device's (or module's) keys, X.509 by CN."""

from __future__ import annotations

import math
from urllib.parse import unquote

from thinghub.domain.errors import Unauthorized
from thinghub.domain.ids import ID_PATTERN, entity_id
from thinghub.domain.model import Device, DeviceKind
from thinghub.ports import Clock
from thinghub.security import sas
from thinghub.services.registry import Registry
from thinghub.services.ttl_cache import TtlCache

__all__ = ["DeviceAuth", "hub_resource"]

VERIFIED_CACHE_MAX = 100_000
# Keys no token is signed with. A token for an id that names no usable device is checked
# against these, so it costs the same two HMACs as a wrong token for a real device: the time
# of the 401 does not tell whether the id exists (issue 11).
DUMMY_KEYS = (sas.generate_key(), sas.generate_key())


def hub_resource(host: str, device_id: str, module_id: str | None = None) -> str:
    """The SAS resource URI of a device or module: `{host}/devices/{id}[/modules/{module}]`
    (docs/faces/device-mqtt.md, "Wire details")."""
    path = f"{host}/devices/{device_id}"
    return f"{path}/modules/{module_id}" if module_id else path


class DeviceAuth:
    def __init__(self, registry: Registry, clock: Clock) -> None:
        self.registry = registry
        self.clock = clock
        # Tokens already verified: (device, module, token, host) -> the key that signed it,
        # until the token expires. HTTP ingest sends the same token on every request; an HMAC
        # per request is waste.
        self._verified: TtlCache[tuple[str, str | None, str, str | None], str] = TtlCache(
            clock, ttl_s=math.inf, max_entries=VERIFIED_CACHE_MAX
        )

    async def device(self, device_id: str, module_id: str | None = None) -> Device:
        """The enabled device or module an id names, else Unauthorized (never NotFound)."""
        device, refusal = await self._lookup(device_id, module_id)
        if refusal is not None or device is None:
            raise refusal or Unauthorized("unknown device", field="deviceId")
        return device

    async def _lookup(
        self, device_id: str, module_id: str | None
    ) -> tuple[Device | None, Unauthorized | None]:
        """The device an id names, and why it may not connect (None when it may)."""
        if not ID_PATTERN.fullmatch(device_id) or (
            module_id is not None and not ID_PATTERN.fullmatch(module_id)
        ):
            raise Unauthorized("malformed device id", field="deviceId")
        device = await self.registry.find(entity_id(device_id, module_id))
        expected = DeviceKind.MODULE if module_id else None
        if (
            device is None
            or (expected is not None and device.kind is not expected)
            or (expected is None and device.kind is DeviceKind.MODULE)
        ):
            return None, Unauthorized("unknown device or bad credentials", field="deviceId")
        if not device.enabled:
            return device, Unauthorized(f"device {device.id!r} is disabled", field="deviceId")
        return device, None

    async def with_sas(
        self,
        device_id: str,
        module_id: str | None,
        token: str,
        host: str | None = None,
        *,
        remember: bool = True,
    ) -> Device:
        """Check a `SharedAccessSignature sr=...&sig=...&se=...` against either device key.

        The host part of `sr` must equal `host` when given (case-insensitive); with no host
        (HTTP ingest behind any name) only the path must match. An unknown or disabled device
        is refused only after the same checks a wrong token of a real device gets.

        `remember=False` checks without keeping the token: an MQTT CONNECT presents it once
        per connection, where the HMAC costs a few microseconds of a connect's ~800 and the
        cached token (~0.4 KiB) would stay for as long as the device is connected.
        """
        device, refusal = await self._lookup(device_id, module_id)
        cache_key = (device_id, module_id, token, host)
        if device is not None and refusal is None:
            signer = self._verified.get(cache_key)  # None once the token expired
            if signer is not None:
                # Still valid only while the key that signed it is one of the device's keys.
                if signer in (device.primary_key, device.secondary_key):
                    return device
                self._verified.invalidate(cache_key)
        try:
            parsed = sas.parse(token)
        except sas.SasError as exc:
            raise refusal or Unauthorized(f"bad SAS token: {exc.reason}", field="password") from exc
        token_host = unquote(parsed.resource).split("/", 1)[0]
        expected = hub_resource(host or token_host, device_id, module_id)
        keys = DUMMY_KEYS if device is None else (device.primary_key, device.secondary_key)
        failure = "signature mismatch"
        for key in keys:
            try:
                sas.verify(parsed, key_b64=key, expected_resource=expected, now=self.clock.now())
            except sas.SasError as exc:
                failure = exc.reason
                continue
            if refusal is not None or device is None:
                break  # a disabled device, even with a good token
            if remember:
                self._verified.put(cache_key, key, expires_at=float(parsed.expiry))
            return device
        raise refusal or Unauthorized(f"SAS token rejected: {failure}", field="password")

"""The one device-side error mapper: domain errors to the codes device protocols answer with.

Services raise domain errors (domain/errors.py). A device is told about one in the terms of
the protocol it is speaking, and those terms live here, in one table (docs/concepts/
device-errors.md shows it):

- MQTT CONNECT refused: a CONNACK return code (MQTT 3.1.1 §3.2.2.3, table 3.1): 2 identifier
  rejected, 3 server unavailable, 4 bad user name or password, 5 not authorized.
- IoT Hub twin requests: the status in `$iothub/twin/res/{status}/?$rid=...`. The device SDKs
  fail the request on any status of 300 or more; IoT Hub documents 400 for a malformed patch
  (a patch over the size cap is answered 400 too), 429 throttled, 5xx its own failures.
- DPS: the status in `$dps/registrations/res/{status}/?$rid=...` and the body's six-digit
  `errorCode` (`{"errorCode": 401002, "trackingId", "message", "timestampUtc"}`). The SDK
  gives up on 300..428 and retries after `retry-after` from 429 on.
- IoT Hub device HTTPS: the HTTP status and IoT Hub's error code name, answered as
  `{"Message": "ErrorCode:<name>;<message>", "ExceptionMessage": ""}`.

Six-digit codes are IoT Hub's common error codes, which DPS shares (the status, then three
digits): 400004 ArgumentInvalid, 401002 IotHubUnauthorizedAccess, 404001 DeviceNotFound, 404103
DeviceNotOnline, 409001 DeviceAlreadyExists, 413001 MessageTooLarge, 429001 ThrottlingException,
504101 GatewayTimeout; DPS adds 400208 (registration id mismatch) and 404202
(unknown operation).

A row is picked by the error's class (the nearest in its MRO), and where a protocol has a
code for one particular input, by class and `field` first: a bad client id is CONNACK 2 (the
code MQTT has for it), an unknown DPS operation id 404202.
"""

from __future__ import annotations

from dataclasses import dataclass

from thinghub.domain.errors import (
    Conflict,
    DeviceOffline,
    Error,
    Forbidden,
    Invalid,
    NotFound,
    PreconditionFailed,
    RateLimited,
    TimedOut,
    TooLarge,
    Unauthorized,
)
from thinghub.mqtt import ConnackCode

__all__ = ["DEVICE_ERRORS", "DeviceCodes", "codes_for"]


@dataclass(frozen=True, slots=True)
class DeviceCodes:
    """How one kind of domain error is told to a device, in each device protocol."""

    connack: ConnackCode  # refusing a CONNECT (hub and DPS)
    twin_status: int  # $iothub/twin/res/{status}
    status: int  # the DPS response status and the IoT Hub HTTPS status
    error_code: int  # the DPS body's errorCode (IoT Hub's six-digit code)
    hub_code: str  # IoT Hub's error code name, in an HTTPS error body


_C = ConnackCode

# (error class, field or None) -> codes; a None field is the class's row for any field.
# Columns: CONNACK, twin status, DPS/HTTPS status, errorCode, IoT Hub code name.
# fmt: off
DEVICE_ERRORS: dict[tuple[type[Error], str | None], DeviceCodes] = {
    # The input is malformed or refused by a policy: a CONNECT user name not of the expected
    # shape, a twin patch or registration body that is not valid.
    (Invalid, None):
        DeviceCodes(_C.BAD_USERNAME_OR_PASSWORD, 400, 400, 400004, "ArgumentInvalid"),
    # The client id is not the one the user name names (§3.2.2.3: "identifier rejected").
    (Invalid, "clientId"):
        DeviceCodes(_C.IDENTIFIER_REJECTED, 400, 400, 400004, "ArgumentInvalid"),
    # A DPS registration naming another registration id than its connection.
    (Invalid, "registrationId"):
        DeviceCodes(_C.IDENTIFIER_REJECTED, 400, 400, 400208, "ArgumentInvalid"),
    # No credential, a bad or expired one, an unknown or disabled device.
    (Unauthorized, None):
        DeviceCodes(_C.NOT_AUTHORIZED, 401, 401, 401002, "IotHubUnauthorizedAccess"),
    # A device acting beyond itself: IoT Hub calls that unauthorized too.
    (Forbidden, None):
        DeviceCodes(_C.NOT_AUTHORIZED, 401, 401, 401002, "IotHubUnauthorizedAccess"),
    # Unknown devices are refused like bad credentials, so ids cannot be probed.
    (NotFound, None):
        DeviceCodes(_C.NOT_AUTHORIZED, 404, 404, 404001, "DeviceNotFound"),
    # A DPS status poll for an operation id this connection was never given.
    (NotFound, "operationId"):
        DeviceCodes(_C.NOT_AUTHORIZED, 404, 404, 404202, "DeviceNotFound"),
    (DeviceOffline, None):
        DeviceCodes(_C.SERVER_UNAVAILABLE, 404, 404, 404103, "DeviceNotOnline"),
    # It exists already (a DPS registration racing another), or a concurrent change won.
    (Conflict, None):
        DeviceCodes(_C.SERVER_UNAVAILABLE, 409, 409, 409001, "DeviceAlreadyExists"),
    # A conditional change (If-Match) of a state that moved on; no device request carries
    # one today, the row keeps the table whole.
    (PreconditionFailed, None):
        DeviceCodes(_C.SERVER_UNAVAILABLE, 412, 412, 412001, "PreconditionFailed"),
    # Settling a C2D message received over HTTPS whose lock is gone (a wrong lock token, an
    # expired lock, a message settled already).
    (PreconditionFailed, "lockToken"):
        DeviceCodes(_C.SERVER_UNAVAILABLE, 412, 412, 412002, "DeviceMessageLockLost"),
    # Over a size cap (a CONNECT's password, a message, a twin patch). A twin patch over it
    # is answered 400, as IoT Hub answers a patch it cannot take.
    (TooLarge, None):
        DeviceCodes(_C.BAD_USERNAME_OR_PASSWORD, 400, 413, 413001, "MessageTooLarge"),
    # Over a rate: connecting too often (IoT Hub's MQTT 5 answers 159 "rate exceeded"; 3.1.1
    # has only "server unavailable"), or a throttled request.
    (RateLimited, None):
        DeviceCodes(_C.SERVER_UNAVAILABLE, 429, 429, 429001, "ThrottlingException"),
    (TimedOut, None):
        DeviceCodes(_C.SERVER_UNAVAILABLE, 504, 504, 504101, "GatewayTimeout"),
    # Any other domain error: one a user caused, of no more specific kind (as the REST
    # faces' STATUS_OF treats it: 400).
    (Error, None):
        DeviceCodes(_C.BAD_USERNAME_OR_PASSWORD, 400, 400, 400004, "ArgumentInvalid"),
}
# fmt: on


def codes_for(error: Error) -> DeviceCodes:
    """The codes that tell a device about `error`, in every device protocol."""
    kinds = [kind for kind in type(error).__mro__ if issubclass(kind, Error)]
    for field in (error.field, None) if error.field is not None else (None,):
        for kind in kinds:
            codes = DEVICE_ERRORS.get((kind, field))
            if codes is not None:
                return codes
    raise TypeError(f"not a domain error: {error!r}")  # unreachable: Error has a row

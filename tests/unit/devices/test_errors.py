"""The device-side error mapper (devices/errors.py): one table, read by every device adapter."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from thinghub.devices.errors import DEVICE_ERRORS, DeviceCodes, codes_for
from thinghub.domain import errors
from thinghub.mqtt import ConnackCode

DOC = Path(__file__).resolve().parents[3] / "docs" / "concepts" / "device-errors.md"


def test_every_domain_error_has_a_row() -> None:
    kinds = [getattr(errors, name) for name in errors.__all__]
    assert {kind for kind, field in DEVICE_ERRORS if field is None} == set(kinds)


@pytest.mark.parametrize(
    ("error", "connack"),
    [
        (errors.Invalid("the username is not host/device/?...", field="username"), 4),
        (errors.Invalid("the client id is not 'd'", field="clientId"), 2),
        (errors.Unauthorized("SAS token rejected", field="password"), 5),
        (errors.RateLimited("connecting too often", field="clientId"), 3),
    ],
)
def test_connect_refusals(error: errors.Error, connack: int) -> None:
    codes = codes_for(error)
    assert codes.connack == connack
    assert isinstance(codes.connack, ConnackCode)  # a named MQTT 3.1.1 code, §3.2.2.3


def test_twin_statuses() -> None:
    assert codes_for(errors.Invalid("reported is not JSON", field="reported")).twin_status == 400
    # Over the size cap is answered like a malformed patch (400), as it always was.
    assert codes_for(errors.TooLarge("reported is 40000 bytes", field="reported")).twin_status == (
        400
    )


def test_dps_statuses_and_error_codes() -> None:
    def dps(error: errors.Error) -> tuple[int, int]:
        codes = codes_for(error)
        return codes.status, codes.error_code

    assert dps(errors.Invalid("not JSON", field="body")) == (400, 400004)
    assert dps(errors.Invalid("another registration", field="registrationId")) == (400, 400208)
    assert dps(errors.NotFound("unknown operationId", field="operationId")) == (404, 404202)
    assert dps(errors.Unauthorized("taken", field="registrationId")) == (401, 401002)
    assert dps(errors.RateLimited("slow down")) == (429, 429001)


def test_https_statuses_and_code_names() -> None:
    def https(error: errors.Error) -> tuple[int, str]:
        codes = codes_for(error)
        return codes.status, codes.hub_code

    assert https(errors.Unauthorized("no token", field="Authorization")) == (
        401,
        "IotHubUnauthorizedAccess",
    )
    assert https(errors.TooLarge("too big", field="body")) == (413, "MessageTooLarge")
    assert https(errors.Invalid("refused by the template", field="body")) == (
        400,
        "ArgumentInvalid",
    )
    assert https(errors.RateLimited("slow down")) == (429, "ThrottlingException")
    assert https(errors.DeviceOffline("gone")) == (404, "DeviceNotOnline")


def test_rows_are_chosen_by_class_then_field() -> None:
    class Narrower(errors.Invalid):
        pass

    # An unknown field falls back to the class's row; a subclass to its nearest ancestor's.
    assert (
        codes_for(errors.Invalid("x", field="elsewhere")) == DEVICE_ERRORS[(errors.Invalid, None)]
    )
    assert codes_for(Narrower("x")) == DEVICE_ERRORS[(errors.Invalid, None)]
    assert codes_for(Narrower("x", field="clientId")).connack == ConnackCode.IDENTIFIER_REJECTED
    # The base class (a user-caused error of no more specific kind) is answered as invalid.
    assert codes_for(errors.Error("x")) == DEVICE_ERRORS[(errors.Invalid, None)]


def _documented() -> dict[tuple[str, str | None], DeviceCodes]:
    rows: dict[tuple[str, str | None], DeviceCodes] = {}
    text = DOC.read_text()
    table = text[text.index("## The table") : text.index("A row is chosen")]
    for line in table.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        match = re.fullmatch(r"`(\w+)`.*", cells[0])
        if match is None:
            continue
        field = None if cells[1] == "any" else cells[1].strip("`")
        connack, twin, status, code = (int(cell) for cell in cells[2:6])
        rows[(match[1], field)] = DeviceCodes(
            ConnackCode(connack), twin, status, code, cells[6].strip("`")
        )
    return rows


def test_the_documented_table_is_the_table() -> None:
    in_code = {(kind.__name__, field): codes for (kind, field), codes in DEVICE_ERRORS.items()}
    assert _documented() == in_code

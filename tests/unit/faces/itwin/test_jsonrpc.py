"""Tests for thinghub.faces.itwin.jsonrpc: requests, id echo rules, errors and builders."""

from __future__ import annotations

from typing import Any

import pytest

from thinghub.domain import errors
from thinghub.faces.itwin import jsonrpc
from thinghub.faces.itwin.jsonrpc import (
    AUTH_FAILED,
    CONFLICT,
    FORBIDDEN,
    INTERNAL_ERROR,
    INVALID_PARAMS,
    INVALID_REQUEST,
    LIMIT_EXCEEDED,
    MAX_SAFE_INTEGER,
    NOT_FOUND,
    UNAVAILABLE,
    Request,
    RpcError,
    parse_request,
    reply_id,
)


@pytest.mark.parametrize(
    ("raw", "answered"),
    [
        ("2", 2),  # the seed: "id": "2" is answered "id": 2
        ("0", 0),
        ("-7", -7),
        (str(MAX_SAFE_INTEGER), MAX_SAFE_INTEGER),
        (str(MAX_SAFE_INTEGER + 1), str(MAX_SAFE_INTEGER + 1)),  # JS could not read it back
        ("02", "02"),  # String(2) would not give "02" back
        ("+2", "+2"),
        ("-0", "-0"),
        ("2.0", "2.0"),
        (" 2", " 2"),
        ("abc", "abc"),
        ("", ""),
        (73_541_235, 73_541_235),  # Bentley's random ids, 50,000..99,999,999
        (1.5, 1.5),
        (None, None),
    ],
)
def test_reply_id_echoes_numeric_strings_as_numbers(raw: Any, answered: Any) -> None:
    got = reply_id(raw)
    assert got == answered and type(got) is type(answered)


@pytest.mark.parametrize("raw", [True, False, [1], {"a": 1}])
def test_reply_id_refuses_other_types(raw: Any) -> None:
    with pytest.raises(RpcError) as caught:
        reply_id(raw)
    assert caught.value.code == INVALID_REQUEST
    assert caught.value.id is None


def test_parse_request_reads_the_seed_create_node() -> None:
    request = parse_request(
        {
            "jsonrpc": "2.0",
            "method": "createNode",
            "id": "2",
            "params": {"node": "/fn/02DDXX/node", "type": "THREAD", "props": {"VERSION": "v4_6"}},
        }
    )
    assert request == Request(
        "createNode",
        {"node": "/fn/02DDXX/node", "type": "THREAD", "props": {"VERSION": "v4_6"}},
        2,
        False,
    )


def test_params_may_be_missing_or_null_and_extra_members_are_kept() -> None:
    # The seed's help request has no params; Bentley's client adds projectIds everywhere.
    assert parse_request({"jsonrpc": "2.0", "method": "help", "id": 5}).params == {}
    assert parse_request({"jsonrpc": "2.0", "method": "time", "id": 5, "params": None}).params == {}
    request = parse_request(
        {"jsonrpc": "2.0", "method": "time", "id": 6, "params": {"projectIds": ["p"]}}
    )
    assert request.params == {"projectIds": ["p"]}


def test_a_request_without_id_is_a_notification() -> None:
    request = parse_request({"jsonrpc": "2.0", "method": "time"})
    assert request.is_notification and request.id is None
    assert not parse_request({"jsonrpc": "2.0", "method": "time", "id": None}).is_notification


@pytest.mark.parametrize(
    ("value", "code", "answered_id"),
    [
        ([{"jsonrpc": "2.0", "method": "time", "id": 1}], INVALID_REQUEST, None),  # a batch
        ("time", INVALID_REQUEST, None),
        ({"jsonrpc": "2.0", "method": "time", "id": True}, INVALID_REQUEST, None),
        ({"method": "time", "id": 3}, INVALID_REQUEST, 3),
        ({"jsonrpc": "1.0", "method": "time", "id": 3}, INVALID_REQUEST, 3),
        ({"jsonrpc": "2.0", "id": "4"}, INVALID_REQUEST, 4),
        ({"jsonrpc": "2.0", "method": "", "id": 4}, INVALID_REQUEST, 4),
        ({"jsonrpc": "2.0", "method": 7, "id": 4}, INVALID_REQUEST, 4),
        ({"jsonrpc": "2.0", "method": "x" * 129, "id": 4}, INVALID_REQUEST, 4),
        ({"jsonrpc": "2.0", "method": "time", "id": 5, "params": "x"}, INVALID_REQUEST, 5),
        ({"jsonrpc": "2.0", "method": "time", "id": 5, "params": [1]}, INVALID_PARAMS, 5),
    ],
)
def test_parse_request_refuses_with_the_id_when_readable(
    value: Any, code: int, answered_id: Any
) -> None:
    with pytest.raises(RpcError) as caught:
        parse_request(value)
    assert caught.value.code == code
    assert caught.value.id == answered_id


def test_builders_make_the_seed_shapes() -> None:
    assert jsonrpc.result(4, {"successfullyProcessedObs": 1}) == {
        "jsonrpc": "2.0",
        "id": 4,
        "result": {"successfullyProcessedObs": 1},
    }
    assert jsonrpc.data_chunk(1, {"2016-12-15T23:38:07.000Z": 77.5}) == {
        "jsonrpc": "2.0",
        "id": 1,
        "result": {"data": {"2016-12-15T23:38:07.000Z": 77.5}},
    }
    finished = jsonrpc.finished(1)
    assert finished == {"jsonrpc": "2.0", "id": 1, "result": {"requestStatus": "finished"}}
    assert "data" not in finished["result"]  # finished always travels alone
    assert jsonrpc.status(9, "acknowledged")["result"] == {"requestStatus": "acknowledged"}


def test_error_message_shape() -> None:
    exc = jsonrpc.invalid_params("sensor", "Field required", id=7)
    assert exc.data == {"param": "sensor"}  # kept on the exception, never sent (see below)
    assert jsonrpc.error_message(exc) == {
        "jsonrpc": "2.0",
        "id": 7,
        "error": {
            "code": -32602,
            "message": "Invalid params: sensor: Field required",
        },
    }
    bare = jsonrpc.error_message(RpcError(-32601, "Method not found", id="a"))
    assert bare == {
        "jsonrpc": "2.0",
        "id": "a",
        "error": {"code": -32601, "message": "Method not found"},
    }


def test_internal_error_says_nothing_more() -> None:
    assert jsonrpc.internal_error(3)["error"] == {
        "code": INTERNAL_ERROR,
        "message": "Internal error",
    }


def test_standard_codes() -> None:
    assert (
        jsonrpc.PARSE_ERROR,
        jsonrpc.INVALID_REQUEST,
        jsonrpc.METHOD_NOT_FOUND,
        jsonrpc.INVALID_PARAMS,
        jsonrpc.INTERNAL_ERROR,
    ) == (-32700, -32600, -32601, -32602, -32603)
    application = [
        jsonrpc.AUTH_REQUIRED,
        AUTH_FAILED,
        FORBIDDEN,
        NOT_FOUND,
        CONFLICT,
        LIMIT_EXCEEDED,
        UNAVAILABLE,
    ]
    assert len(set(application)) == len(application)
    assert all(-32099 <= code <= -32000 for code in application)  # JSON-RPC §5.1's range


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (errors.Unauthorized("wrong code"), AUTH_FAILED),
        (errors.Forbidden("read-only token"), FORBIDDEN),
        (errors.NotFound("no sensor /x/sensor"), NOT_FOUND),
        (errors.Conflict("node exists"), CONFLICT),
        (errors.TooLarge("too big"), LIMIT_EXCEEDED),
        (errors.RateLimited("slow down"), LIMIT_EXCEEDED),
        (errors.DeviceOffline("offline"), UNAVAILABLE),
        (errors.TimedOut("late"), UNAVAILABLE),
    ],
)
def test_domain_errors_translate_once(error: errors.Error, code: int) -> None:
    exc = jsonrpc.rpc_error_for(error, 12)
    assert (exc.code, exc.id, exc.message) == (code, 12, error.message)
    assert exc.data == {"code": error.code}


def test_invalid_names_its_param() -> None:
    exc = jsonrpc.rpc_error_for(errors.Invalid("unknown unit 'furlong'", field="unit"), 3)
    assert exc.code == INVALID_PARAMS
    assert exc.message == "Invalid params: unit: unknown unit 'furlong'"
    assert exc.data == {"param": "unit"}
    same = jsonrpc.rpc_error_for(errors.Invalid("unit: unknown unit 'x'", field="unit"))
    assert same.message == "Invalid params: unit: unknown unit 'x'"  # not "unit: unit: ..."

"""Tests for thinghub.faces.itwin.methods (and utility): binding, dispatch, streams, help."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import pytest
from pydantic import Field

from thinghub.domain import errors
from thinghub.faces.itwin.jsonrpc import (
    AUTH_FAILED,
    AUTH_REQUIRED,
    INVALID_PARAMS,
    METHOD_NOT_FOUND,
    NOT_FOUND,
    Request,
    RpcError,
    parse_request,
)
from thinghub.faces.itwin.methods import (
    ACKNOWLEDGED,
    MAX_REPORTED_PARAM_ERRORS,
    MethodKind,
    MethodSpec,
    MethodTable,
)
from thinghub.faces.itwin.params import (
    DataParams,
    GetSensorsParams,
    NoParams,
    RpcParams,
    SubscribeDataParams,
    UploadDataParams,
)
from thinghub.faces.itwin.utility import NEXT_ID, add_utility_methods


@dataclass
class Conn:
    principal: str | None = None
    log: list[str] = field(default_factory=list)
    pushes: asyncio.Queue[dict[str, float]] = field(default_factory=asyncio.Queue)


NOW = 1_528_140_935.4  # 2018-06-04T19:35:35.400Z


def make_table() -> MethodTable[Conn]:
    table: MethodTable[Conn] = MethodTable()

    async def authenticate(conn: Conn, code: str) -> None:
        if code != "good-key":
            raise errors.Unauthorized("the code is not a valid API key or token")
        conn.principal = "alice"

    add_utility_methods(table, authenticate=authenticate, now=lambda: NOW)

    @table.call("getSensors", GetSensorsParams, summary="Sensors of the project.")
    async def get_sensors(conn: Conn, params: GetSensorsParams) -> list[dict[str, Any]]:
        conn.log.append(f"getSensors project={params.project_id}")
        if params.sensors and params.sensors[0] == "/missing/sensor":
            raise errors.NotFound("no sensor /missing/sensor")
        return [{"id": s} for s in params.sensors or []]

    @table.stream("getData", DataParams, summary="A sensor's data, streamed.")
    async def get_data(conn: Conn, params: DataParams) -> AsyncIterator[dict[str, Any]]:
        yield {"data": {"2016-12-15T23:38:07.000Z": 1.0}}
        if params.metric == "boom":
            raise errors.NotFound("metric boom has no data")
        yield {"data": {"2016-12-16T07:13:07.000Z": 2.0}}

    @table.subscription("subscribeData", SubscribeDataParams, summary="New data, pushed.")
    async def subscribe_data(
        conn: Conn, params: SubscribeDataParams
    ) -> AsyncIterator[Mapping[str, Any]]:
        yield ACKNOWLEDGED
        while True:
            yield {"data": await conn.pushes.get()}

    return table


async def run(table: MethodTable[Conn], conn: Conn, value: Any, *, auth: bool = True) -> list[Any]:
    invocation = table.invoke(conn, parse_request(value), is_authenticated=auth)
    return [message async for message in invocation.messages()]


def req(method: str, id: Any = 1, **params: Any) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "method": method, "id": id, "params": params}


async def test_authenticate_first_then_calls() -> None:
    table, conn = make_table(), Conn()
    [message] = await run(table, conn, req("getSensors", 1, sensors=["/a/sensor"]), auth=False)
    assert message["error"]["code"] == AUTH_REQUIRED and message["id"] == 1
    [message] = await run(table, conn, req("authenticate", "0", code="bad"), auth=False)
    assert message == {
        "jsonrpc": "2.0",
        "id": 0,
        "error": {
            "code": AUTH_FAILED,
            "message": "the code is not a valid API key or token",
        },
    }
    assert conn.principal is None
    [message] = await run(table, conn, req("authenticate", "0", code="good-key"), auth=False)
    assert message == {"jsonrpc": "2.0", "id": 0, "result": {"nextId": NEXT_ID}}
    assert isinstance(message["result"], dict)  # the Python sample runs "data" in result
    assert conn.principal == "alice"


async def test_call_with_extra_params_and_projects() -> None:
    table, conn = make_table(), Conn()
    messages = await run(
        table,
        conn,
        req("getSensors", 73_541_235, sensors=["/a/sensor"], projectIds=["p1"], smoothing={}),
    )
    assert messages == [{"jsonrpc": "2.0", "id": 73_541_235, "result": [{"id": "/a/sensor"}]}]
    assert conn.log == ["getSensors project=p1"]


async def test_unknown_method() -> None:
    [message] = await run(make_table(), Conn(), req("getEverything", 3))
    assert message["error"]["code"] == METHOD_NOT_FOUND
    assert "getEverything" in message["error"]["message"]
    assert message["id"] == 3


async def test_unknown_method_wins_over_missing_authentication() -> None:
    [message] = await run(make_table(), Conn(), req("nope"), auth=False)
    assert message["error"]["code"] == METHOD_NOT_FOUND


@pytest.mark.parametrize(
    ("params", "param"),
    [
        ({"metric": "dx", "unit": "m"}, "sensor"),
        ({"sensor": 5, "metric": "dx", "unit": "m"}, "sensor"),
        ({"sensor": "/s/sensor", "metric": "dx"}, "unit"),
        (
            {"sensor": "/s/sensor", "metric": "dx", "unit": "m", "startDate": "yesterday"},
            "startDate",
        ),
        (
            {"sensor": "/s/sensor", "metric": "dx", "unit": "m", "limit": {"function": "middle"}},
            "limit.function",
        ),
        (
            {"sensor": "/s/sensor", "metric": "dx", "unit": "m", "projectIds": ["a", "b"]},
            "projectIds",
        ),
    ],
)
async def test_bad_params_name_the_param(params: dict[str, Any], param: str) -> None:
    [message] = await run(make_table(), Conn(), req("getData", 8, **params))
    error = message["error"]
    assert error["code"] == INVALID_PARAMS and message["id"] == 8
    assert "data" not in error  # the seed's JS callbacks test "data" before "code"
    assert error["message"].startswith(f"Invalid params: {param}: ")


async def test_bad_params_do_not_echo_input_and_are_capped() -> None:
    table, conn = make_table(), Conn()
    invocation = table.invoke(
        conn, Request("getSensors", {"sensors": [f"s{'x' * 600}"] * 50}, 1), is_authenticated=True
    )
    assert invocation.error is not None
    assert invocation.error.data["param"] == "sensors[0]"
    assert len(invocation.error.data["errors"]) == MAX_REPORTED_PARAM_ERRORS
    [message] = await run(table, conn, req("getSensors", 1, sensors=[f"s{'x' * 600}"] * 50))
    error = message["error"]
    assert error["message"].startswith("Invalid params: sensors[0]: ")
    assert "xxxxxxxx" not in str(error)


async def test_stream_chunks_then_a_separate_finished() -> None:
    messages = await run(
        make_table(), Conn(), req("getData", 1, sensor="/s/sensor", metric="dx", unit="m")
    )
    assert messages == [
        {"jsonrpc": "2.0", "id": 1, "result": {"data": {"2016-12-15T23:38:07.000Z": 1.0}}},
        {"jsonrpc": "2.0", "id": 1, "result": {"data": {"2016-12-16T07:13:07.000Z": 2.0}}},
        {"jsonrpc": "2.0", "id": 1, "result": {"requestStatus": "finished"}},
    ]


async def test_an_error_ends_a_stream_without_finished() -> None:
    messages = await run(
        make_table(), Conn(), req("getData", 2, sensor="/s/sensor", metric="boom", unit="m")
    )
    assert messages[0]["result"]["data"]
    assert messages[1]["error"]["code"] == NOT_FOUND and messages[1]["id"] == 2
    assert len(messages) == 2


async def test_subscription_pushes_with_the_subscribe_id_and_never_finishes() -> None:
    table, conn = make_table(), Conn()
    invocation = table.invoke(
        conn,
        parse_request(req("subscribeData", 55, sensors=["/s/sensor"], metric="T", unit="F")),
        is_authenticated=True,
    )
    assert invocation.kind is MethodKind.SUBSCRIPTION
    stream = invocation.messages()
    assert await anext(stream) == {
        "jsonrpc": "2.0",
        "id": 55,
        "result": {"requestStatus": "acknowledged"},
    }
    for value in (1.0, 2.0, 3.0):
        conn.pushes.put_nowait({"2024-01-01T00:00:00.000Z": value})
        message = await anext(stream)
        assert message == {
            "jsonrpc": "2.0",
            "id": 55,
            "result": {"data": {"2024-01-01T00:00:00.000Z": value}},
        }
    # Nothing more is pending: the next message waits for a push, it is never "finished".
    pending = asyncio.ensure_future(anext(stream))
    done, _ = await asyncio.wait({pending}, timeout=0.05)
    assert not done
    pending.cancel()
    with pytest.raises(asyncio.CancelledError):
        await pending
    await stream.aclose()


async def test_a_handler_may_not_send_finished_itself() -> None:
    table: MethodTable[Conn] = MethodTable()

    @table.subscription("subscribeNodes", NoParams, summary="x")
    async def bad(conn: Conn, params: NoParams) -> AsyncIterator[dict[str, Any]]:
        yield {"requestStatus": "finished"}

    with pytest.raises(ValueError, match="finished"):
        await run(table, Conn(), req("subscribeNodes"))


async def test_rpc_error_raised_by_a_handler_gets_the_request_id() -> None:
    table: MethodTable[Conn] = MethodTable()

    @table.call("unsubscribeData", NoParams, summary="x")
    async def unsubscribe(conn: Conn, params: NoParams) -> None:
        raise RpcError(NOT_FOUND, "no subscription 9")

    [message] = await run(table, Conn(), req("unsubscribeData", "12"))
    assert message["id"] == 12 and message["error"]["code"] == NOT_FOUND


async def test_other_exceptions_propagate_to_the_adapter() -> None:
    table: MethodTable[Conn] = MethodTable()

    @table.call("explode", NoParams, summary="x")
    async def explode(conn: Conn, params: NoParams) -> None:
        raise KeyError("our bug")

    with pytest.raises(KeyError):
        await run(table, Conn(), req("explode"))


async def test_notifications_get_no_message() -> None:
    table, conn = make_table(), Conn()
    note = {"jsonrpc": "2.0", "method": "getSensors", "params": {"sensors": ["/a/sensor"]}}
    assert await run(table, conn, note) == []
    assert conn.log == ["getSensors project=None"]  # a call still runs
    failing = {"jsonrpc": "2.0", "method": "getSensors", "params": {"sensors": ["/missing/sensor"]}}
    assert await run(table, conn, failing) == []  # even its error is not answered
    assert await run(table, conn, {"jsonrpc": "2.0", "method": "nope"}) == []
    stream = {
        "jsonrpc": "2.0",
        "method": "getData",
        "params": {"sensor": "/s", "metric": "a", "unit": "b"},
    }
    assert await run(table, conn, stream) == []


async def test_time_and_help() -> None:
    table = make_table()
    [message] = await run(table, Conn(), req("time", 4))
    assert message["result"] == {"time": "2018-06-04T19:35:35.400Z"}
    [message] = await run(table, Conn(), req("help", 5))
    text = message["result"]
    assert isinstance(text, str)  # the seed's Python sample prints "\r\n" + result
    "\r\n" + text  # noqa: B018 - what the sample does
    lines = text.splitlines()
    assert len(lines) == len(table)
    assert (
        "getData {sensor, metric, unit, startDate?, endDate?, limit?, params?, projectIds?}"
        " - A sensor's data, streamed." in lines
    )
    assert lines[0].startswith("authenticate {code, projectIds?} - ")
    assert "time {projectIds?} - The server's current time." in lines


def test_help_entries_list_every_method_with_its_params() -> None:
    entries = {e["method"]: e for e in make_table().help_entries()}
    assert set(entries) == {
        "authenticate",
        "help",
        "time",
        "getSensors",
        "getData",
        "subscribeData",
    }
    params = {p["name"]: p for p in entries["getData"]["params"]}
    assert params["sensor"] == {
        "name": "sensor",
        "type": "string",
        "required": True,
        "description": "the sensor id",
    }
    assert params["startDate"]["type"] == "string" and not params["startDate"]["required"]
    assert params["limit"]["type"] == "string or object"
    assert params["params"]["type"] == "object"
    assert entries["getData"]["kind"] == "stream"
    assert entries["subscribeData"]["kind"] == "subscription"
    sensors = {p["name"]: p for p in entries["subscribeData"]["params"]}["sensors"]
    assert sensors["type"] == "array of string" and sensors["required"]


def test_registering_twice_is_refused() -> None:
    table: MethodTable[Conn] = MethodTable()

    async def handler(conn: Conn, params: RpcParams) -> None:
        return None

    table.add(MethodSpec("time", NoParams, MethodKind.CALL, handler, "x"))
    with pytest.raises(ValueError, match="twice"):
        table.add(MethodSpec("time", NoParams, MethodKind.CALL, handler, "x"))
    assert "time" in table and "nope" not in table


async def test_invoke_of_a_request_object() -> None:
    table = make_table()
    invocation = table.invoke(Conn(), Request("uploadData", {}, 1), is_authenticated=True)
    assert invocation.error is not None and invocation.error.code == METHOD_NOT_FOUND
    # uploadData's entries are checked one by one later, but the list itself is required.
    table.call("uploadData", UploadDataParams, summary="x")(_noop)
    invocation = table.invoke(Conn(), Request("uploadData", {"data": []}, 1), is_authenticated=True)
    assert invocation.error is not None and invocation.error.data["param"] == "data"


async def _noop(conn: Conn, params: Any) -> None:
    return None


def test_field_descriptions_reach_help() -> None:
    class Params(RpcParams):
        depth: int = Field(default=1, description="how deep")

    table: MethodTable[Conn] = MethodTable()
    table.call("dig", Params, summary="Dig.")(_noop)
    [entry] = table.help_entries()
    assert {
        "name": "depth",
        "type": "number",
        "required": False,
        "description": "how deep",
    } in entry["params"]

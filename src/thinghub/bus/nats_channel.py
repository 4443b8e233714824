"""Reach a device on whichever node holds its connection: the DeviceChannel over NATS.

Theory of operation. `NatsDeviceChannel` asks Presence for the device's owner. This node: its
LocalLinks answers. Another node: a request on that node's subject (`thinghub.node.<node>`),
which `serve_request` on the owner answers from its LocalLinks. No owner (or an owner whose
lease lapsed): the device is offline, as on one node.

Requests and replies are JSON objects:

    {"op": "method", "device": id, "name": n, "payload": p, "timeout_s": t}
        -> {"ok": {"status": s, "payload": p}} | {"error": code, "message": m, "field": f}
    {"op": "desired", "device": id, "patch": {...}, "version": v}        -> {"ok": null}
    {"op": "c2d", "device": id, "message": {id, body (base64), properties, created_at,
                                           expires_at}}                  -> {"ok": bool}
    {"op": "disconnect", "device": id, "revoked": bool}                   -> {"ok": bool}
    {"op": "subscribed", "device": id, "feed": f}                         -> {"ok": bool}
    {"op": "drop", "device": id}   (no reply: another node took the device over)

Errors and timeouts are those of one node: DeviceOffline when nobody holds the device (or the
owner node vanished: NATS has no responder), TimedOut when the device does not answer a method
within its timeout. The request itself waits the method's timeout plus REQUEST_MARGIN_S for the
hops, so the owner's TimedOut arrives before the request gives up.
"""

from __future__ import annotations

import base64
import logging
from collections.abc import Callable
from typing import Any, Protocol, cast

import nats.errors
import orjson
from nats.aio.client import Client
from nats.aio.msg import Msg

from thinghub.domain.errors import DeviceOffline, Error, TimedOut
from thinghub.ports import C2DMessage, DeviceChannel, DeviceFeed, MethodResult, Presence

__all__ = [
    "PUSH_TIMEOUT_S",
    "REQUEST_MARGIN_S",
    "LocalLinks",
    "NatsDeviceChannel",
    "serve_request",
]

logger = logging.getLogger(__name__)

REQUEST_MARGIN_S = 2.0  # on top of a method's timeout: the hops to the owner node and back
PUSH_TIMEOUT_S = 10.0  # a desired patch, C2D message, disconnect or question to the owner
_ERRORS: dict[str, type[Error]] = {cls.code: cls for cls in (DeviceOffline, TimedOut)}


class _Link(Protocol):
    device_id: str

    async def close(self) -> None: ...


class LocalLinks(DeviceChannel, Protocol):
    """What this node's device adapter offers (thinghub.devices.links.LocalLinks): the
    DeviceChannel for devices connected here, and the table of their links."""

    def get(self, device_id: str) -> object | None: ...
    def evict(self, device_id: str) -> _Link | None: ...
    def device_ids(self) -> list[str]: ...


class RemoteError(Error):
    """The owner node failed a request with an error of its own (shown with its code)."""


class NatsDeviceChannel:
    """The DeviceChannel port across nodes (see the module docstring)."""

    def __init__(
        self,
        nc: Client,
        presence: Presence,
        local: LocalLinks,
        node_id: str,
        subject_of: Callable[[str], str],
    ) -> None:
        self.nc = nc
        self.presence = presence
        self.local = local
        self.node_id = node_id
        self.subject_of = subject_of
        self.round_trips = 0  # requests answered by another node (for metrics)

    async def _owner(self, device_id: str) -> str | None:
        if self.local.get(device_id) is not None:
            return self.node_id
        return await self.presence.owner(device_id)

    async def _request(self, owner: str, body: dict[str, Any], timeout_s: float) -> Any:
        """The owner's `ok` value; raises its error, or nats errors (no responder, timeout)."""
        reply = await self.nc.request(self.subject_of(owner), orjson.dumps(body), timeout_s)
        self.round_trips += 1
        answer = orjson.loads(reply.data)
        if "error" in answer:
            cls = _ERRORS.get(answer["error"], RemoteError)
            error = cls(str(answer.get("message", "")), field=answer.get("field"))
            if cls is RemoteError:
                error.code = str(answer["error"])
            raise error
        return answer.get("ok")

    async def call_method(
        self, device_id: str, name: str, payload: Any, timeout_s: float
    ) -> MethodResult:
        owner = await self._owner(device_id)
        if owner is None or owner == self.node_id:
            return await self.local.call_method(device_id, name, payload, timeout_s)
        body = {
            "op": "method",
            "device": device_id,
            "name": name,
            "payload": payload,
            "timeout_s": timeout_s,
        }
        try:
            ok = await self._request(owner, body, timeout_s + REQUEST_MARGIN_S)
        except nats.errors.NoRespondersError as exc:
            raise DeviceOffline(f"device {device_id!r} is not connected", field="deviceId") from exc
        except nats.errors.TimeoutError as exc:
            raise TimedOut(
                f"device {device_id!r} did not answer method {name!r} within {timeout_s:g} s"
            ) from exc
        return MethodResult(int(ok["status"]), ok["payload"])

    async def push_desired(self, device_id: str, patch: dict[str, Any], version: int) -> None:
        owner = await self._owner(device_id)
        if owner is None or owner == self.node_id:
            await self.local.push_desired(device_id, patch, version)
            return
        body = {"op": "desired", "device": device_id, "patch": patch, "version": version}
        try:
            await self._request(owner, body, PUSH_TIMEOUT_S)
        except nats.errors.Error as exc:  # the device catches up from the twin on reconnect
            logger.warning(
                "device %s: desired v%d not pushed via %s: %s", device_id, version, owner, exc
            )

    async def push_c2d(self, message: C2DMessage) -> bool:
        owner = await self._owner(message.device_id)
        if owner is None or owner == self.node_id:
            return await self.local.push_c2d(message)
        body = {"op": "c2d", "device": message.device_id, "message": _c2d_body(message)}
        try:
            return bool(await self._request(owner, body, PUSH_TIMEOUT_S))
        except nats.errors.Error as exc:  # it stays queued for the next delivery
            logger.warning(
                "device %s: C2D %s not pushed via %s: %s", message.device_id, message.id, owner, exc
            )
            return False

    async def disconnect(self, device_id: str, *, revoked: bool = False) -> bool:
        owner = await self._owner(device_id)
        if owner is None or owner == self.node_id:
            return await _local_disconnect(self.local, device_id, revoked)
        body = {"op": "disconnect", "device": device_id, "revoked": revoked}
        try:
            return bool(await self._request(owner, body, PUSH_TIMEOUT_S))
        except nats.errors.Error as exc:
            logger.warning("device %s: not disconnected via %s: %s", device_id, owner, exc)
            return False

    async def has_subscribed(self, device_id: str, feed: DeviceFeed) -> bool:
        owner = await self._owner(device_id)
        if owner is None or owner == self.node_id:
            return await self.local.has_subscribed(device_id, feed)
        body = {"op": "subscribed", "device": device_id, "feed": feed}
        try:
            return bool(await self._request(owner, body, PUSH_TIMEOUT_S))
        except nats.errors.Error as exc:
            logger.warning("device %s: asking %s about %s failed: %s", device_id, owner, feed, exc)
            return False


async def _local_disconnect(local: LocalLinks, device_id: str, revoked: bool) -> bool:
    """LocalLinks.disconnect, with `revoked` where this version of it takes one."""
    if revoked:
        try:
            return await cast(Any, local).disconnect(device_id, revoked=True)  # type: ignore[no-any-return]
        except TypeError:
            pass
    return await local.disconnect(device_id)


def _c2d_body(message: C2DMessage) -> dict[str, Any]:
    return {
        "id": message.id,
        "body": base64.b64encode(message.body).decode("ascii"),
        "properties": message.properties,
        "created_at": message.created_at,
        "expires_at": message.expires_at,
    }


def _c2d_message(device_id: str, body: dict[str, Any]) -> C2DMessage:
    return C2DMessage(
        str(body["id"]),
        device_id,
        base64.b64decode(body["body"]),
        {str(k): str(v) for k, v in body["properties"].items()},
        float(body["created_at"]),
        float(body["expires_at"]),
    )


async def _answer(links: LocalLinks, request: dict[str, Any]) -> Any:
    op = request["op"]
    device_id = str(request["device"])
    if op == "method":
        result = await links.call_method(
            device_id, str(request["name"]), request["payload"], float(request["timeout_s"])
        )
        return {"status": result.status, "payload": result.payload}
    if op == "desired":
        await links.push_desired(device_id, dict(request["patch"]), int(request["version"]))
        return None
    if op == "c2d":
        return await links.push_c2d(_c2d_message(device_id, request["message"]))
    if op == "disconnect":
        return await _local_disconnect(links, device_id, bool(request.get("revoked")))
    if op == "subscribed":
        return await links.has_subscribed(device_id, request["feed"])
    raise ValueError(f"unknown op {op!r}")


async def serve_request(msg: Msg, links: LocalLinks) -> None:
    """Answer one request from another node (runs as its own task: a method may take long)."""
    try:
        request = orjson.loads(msg.data)
        if request.get("op") == "drop":
            link = links.evict(str(request["device"]))
            if link is not None:
                logger.info(
                    "device %s: connected to another node; dropping it here", link.device_id
                )
                await link.close()
            return
        answer: dict[str, Any] = {"ok": await _answer(links, request)}
    except Error as exc:
        answer = {"error": exc.code, "message": exc.message, "field": exc.field}
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as exc:
        logger.warning("nats: a malformed request on %s: %s", msg.subject, exc)
        answer = {"error": "BadRequest", "message": f"malformed request: {exc}"}
    except Exception:
        logger.exception("nats: serving a request on %s failed", msg.subject)
        answer = {
            "error": "InternalError",
            "message": "the device's node failed; it has been logged",
        }
    if msg.reply:
        try:
            await msg.respond(orjson.dumps(answer))
        except nats.errors.Error as exc:
            logger.warning("nats: reply on %s lost: %s", msg.subject, exc)

"""The ux4iot face: sessions, grants and subscriptions, REST at /ux4iot and live data over
Socket.IO at /socket.io/ (namespaces `/`, `/ux4iot` and `/ux4iot/`). See docs/faces/ux4iot.md."""

import secrets

from starlette.routing import Mount, Route
from starlette.types import ASGIApp, Receive, Scope, Send

from thinghub.faces.face import Face, FaceContext, FaceParts
from thinghub.faces.ux4iot.nats_store import NatsSessionStore
from thinghub.faces.ux4iot.reference import REFERENCE_PATH
from thinghub.faces.ux4iot.routes import FACE_NAME, create_app
from thinghub.faces.ux4iot.runtime import Ux4iotRuntime
from thinghub.faces.ux4iot.store import SessionStore

__all__ = ["FACE", "build"]


class _AtRoot:
    """The face app answering a root path as its own (`POST /session` at the port's root:
    admin-node's `Ux4iotAdminSDK.getSessionIdStatic(endpoint)` resolves `new URL('/session',
    endpoint)`, which drops the Endpoint's `/ux4iot`)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.app({**scope, "root_path": ""}, receive, send)


def build(context: FaceContext) -> FaceParts:
    """The REST app for this port, and the one runtime of the server (sessions, Socket.IO,
    the live feed) shared by every port the face is served on."""
    runtime = context.shared.get(FACE_NAME)
    if not isinstance(runtime, Ux4iotRuntime):
        store: SessionStore | None = None
        if context.nats is not None:  # sessions shared by every node of the cluster
            store = NatsSessionStore(
                context.nats,
                # this run's socket counts: "<run>:<node id>"
                f"{context.node_boot or secrets.token_hex(8)}:{context.node_id}",
                idle_s=context.settings.ux4iot_session_idle_s,
                max_sessions=context.settings.ux4iot_max_sessions,
                node_alive=context.node_alive if context.node_boot else None,
            )
        runtime = context.shared[FACE_NAME] = Ux4iotRuntime(
            context.services, context.settings, now=context.clock.now, store=store
        )
    app = create_app(context, runtime)
    return FaceParts(
        app=app,
        root_routes=(
            # The client's Engine.IO path is always /socket.io/, whatever the Endpoint's path.
            Mount("/socket.io", app=runtime.channel.asgi()),
            Route("/session", _AtRoot(app), methods=["POST"]),
        ),
        workers=(runtime,),
        connections=lambda: {"socketio": runtime.channel.socket_count},
    )


# On its own port (--face-listen) it answers at `/`: an Endpoint without a path, namespace `/`.
FACE = Face(
    name=FACE_NAME,
    prefix="/ux4iot",
    native_prefix="",
    build=build,
    references=(("Socket.IO reference", REFERENCE_PATH),),
)

"""The ux4iot face: sessions, grants and subscriptions, REST at /ux4iot and live data over
Socket.IO at /socket.io/ (namespaces `/` and `/ux4iot`). See docs/faces/ux4iot.md."""

from starlette.routing import Mount

from thinghub.faces.face import Face, FaceContext, FaceParts
from thinghub.faces.ux4iot.reference import REFERENCE_PATH
from thinghub.faces.ux4iot.routes import FACE_NAME, create_app
from thinghub.faces.ux4iot.runtime import Ux4iotRuntime

__all__ = ["FACE", "build"]


def build(context: FaceContext) -> FaceParts:
    """The REST app for this port, and the one runtime of the server (sessions, Socket.IO,
    the live feed) shared by every port the face is served on."""
    runtime = context.shared.get(FACE_NAME)
    if not isinstance(runtime, Ux4iotRuntime):
        runtime = context.shared[FACE_NAME] = Ux4iotRuntime(
            context.services, context.settings, now=context.clock.now
        )
    return FaceParts(
        app=create_app(context, runtime),
        # The client's Engine.IO path is always /socket.io/, whatever the Endpoint's path.
        root_routes=(Mount("/socket.io", app=runtime.channel.asgi()),),
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

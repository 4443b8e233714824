"""The web console at /console: devices, live state and telemetry plots, twins, commands,
tokens and users, for people in a browser (docs/console.md).

It is registered like an API face (faces/face.py) and, like one, reaches the core only
through the services, with the principal of the signed-in user.
"""

from thinghub.faces.console.app import create_app, render_not_found, shared_store
from thinghub.faces.console.sessions import SessionSweeper
from thinghub.faces.face import Face, FaceContext, FaceParts

__all__ = ["FACE", "create_app"]


def build(context: FaceContext) -> FaceParts:
    store = shared_store(context.services, context.settings)
    return FaceParts(
        app=create_app(
            context.services,
            context.settings,
            store=store,
            addresses=context.addresses,
            clock=context.clock.now,
        ),
        workers=(SessionSweeper(store, context.clock.now),),
    )


# On its own port (--face-listen console=HOST:PORT) it answers at `/console` and at `/`.
FACE = Face(
    name="console",
    prefix="/console",
    native_prefix="/console",
    build=build,
    render_error=render_not_found,
    docs=None,
)

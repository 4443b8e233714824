"""The Azure IoT Central face, at /central/api."""

from thinghub.faces.central._wire import render_error
from thinghub.faces.central.app import create_app
from thinghub.faces.central.scheduler import Scheduler
from thinghub.faces.face import Face, FaceContext, FaceParts

__all__ = ["FACE", "create_app", "render_error"]


def build(context: FaceContext) -> FaceParts:
    # The scheduler of scheduled jobs runs once per server (the workers of the first build).
    return FaceParts(app=create_app(context), workers=(Scheduler(context.services, context.clock),))


# On its own port (--face-listen) it also answers at `/api`, where IoT Central clients look.
FACE = Face(
    name="central",
    prefix="/central/api",
    native_prefix="/api",
    build=build,
    render_error=render_error,
)

"""The Embedthis Ioto face: the device API at /ioto/api (register, claim, release, get, find,
provision, getCreds, getSignedUrl) and the S3-compatible file endpoint at /ioto/s3.

Its MQTT side (devices with provisioned certificates) is the Ioto dialect of the device
listener, devices/ioto.py.
"""

from starlette.routing import Mount

from thinghub.faces.face import Face, FaceContext, FaceParts
from thinghub.faces.ioto.api import create_app, render_error
from thinghub.faces.ioto.s3_app import S3_MOUNT, S3App
from thinghub.services.claims import API_PATH

__all__ = ["FACE", "create_app", "render_error"]


def build(context: FaceContext) -> FaceParts:
    return FaceParts(
        app=create_app(context),
        root_routes=(Mount(S3_MOUNT, app=S3App(context.services)),),
    )


# On its own port (--face-listen) it also answers at `/api`, as the vendor's builder does.
FACE = Face(
    name="ioto",
    prefix=API_PATH,
    native_prefix="/api",
    build=build,
    render_error=render_error,
)

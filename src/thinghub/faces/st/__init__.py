"""The ST AIoT Craft face, also thinghub's native management API, at /v1."""

from thinghub.faces.face import Face, FaceContext, FaceParts
from thinghub.faces.st.app import create_app, fast_routes

__all__ = ["FACE", "create_app"]


def build(context: FaceContext) -> FaceParts:
    return FaceParts(app=create_app(context), fast_routes=fast_routes(context))


# On its own port (--face-listen) it also answers at `/v1`, where ST AIoT Craft clients look.
FACE = Face(name="st", prefix="/v1", native_prefix="/v1", build=build)

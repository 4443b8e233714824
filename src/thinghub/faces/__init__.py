"""API faces: one package per cloud API, each a thin adapter over the services.

`FACES` lists every face the server serves (see thinghub.faces.face for what a face is and
docs/architecture.md, "Faces: how one is registered", for adding one).
"""

from thinghub.faces.central import FACE as CENTRAL
from thinghub.faces.face import Face
from thinghub.faces.ioto import FACE as IOTO
from thinghub.faces.itwin import FACE as ITWIN
from thinghub.faces.st import FACE as ST
from thinghub.faces.ux4iot import FACE as UX4IOT

__all__ = ["FACES"]

FACES: tuple[Face, ...] = (ST, CENTRAL, IOTO, UX4IOT, ITWIN)

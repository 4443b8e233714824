"""The Azure IoT Central face, at /central/api."""

from thinghub.faces.central._wire import render_error
from thinghub.faces.central.app import create_app

__all__ = ["create_app", "render_error"]

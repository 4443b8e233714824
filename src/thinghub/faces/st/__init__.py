"""The ST AIoT Craft face, also thinghub's native management API, at /v1."""

from thinghub.faces.st.app import create_app

__all__ = ["create_app"]

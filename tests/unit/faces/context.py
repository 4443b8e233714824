"""A FaceContext for face plumbing tests that never reach the services."""

from __future__ import annotations

import dataclasses
import ssl
from typing import Any, cast

from thinghub.bus.clock import SystemClock
from thinghub.config import Settings
from thinghub.faces.face import FaceContext
from thinghub.services.core import Services


class NoServices:
    """Stands in for the services where a test's routes never use them: any use fails."""

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"this test's face used services.{name}")


def no_tls() -> ssl.SSLContext:
    raise AssertionError("this test's face asked for TLS")


def face_context(**settings: Any) -> FaceContext:
    """Default settings with `settings` changed, and no services."""
    return FaceContext(
        cast(Services, NoServices()),
        dataclasses.replace(Settings.defaults(), **settings),
        no_tls,
        SystemClock(),
    )

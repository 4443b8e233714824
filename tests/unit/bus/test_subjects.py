"""Tests for thinghub.bus.subjects: NATS-style matching of subjects against patterns."""

from __future__ import annotations

import pytest

from thinghub.bus.subjects import subject_matches


@pytest.mark.parametrize(
    ("pattern", "subject", "expected"),
    [
        ("telemetry.a1", "telemetry.a1", True),
        ("telemetry.a1", "telemetry.a2", False),
        ("telemetry.a1", "telemetry.a1.dev", False),
        ("telemetry.a1.dev", "telemetry.a1", False),
        ("telemetry.*", "telemetry.a1", True),
        ("telemetry.*", "telemetry.a1.dev", False),
        ("telemetry.*", "telemetry", False),
        ("*.a1", "event.a1", True),
        ("event.*.dev", "event.a1.dev", True),
        ("event.*.dev", "event.a1.other", False),
        ("*", "telemetry", True),
        ("*", "telemetry.a1", False),
        ("telemetry.>", "telemetry.a1", True),
        ("telemetry.>", "telemetry.a1.dev.x", True),
        ("telemetry.>", "telemetry", False),  # `>` needs at least one more token
        ("telemetry.>", "event.a1", False),
        (">", "telemetry.a1.dev", True),
        ("*.a1.>", "event.a1.dev", True),
        ("*.a1.>", "event.a2.dev", False),
        # escaped tokens are plain text: %2A is not a wildcard, %2E not a separator
        ("telemetry.a1.*.d%2Ex", "telemetry.a1._.d%2Ex", True),
        ("telemetry.a1.*.d%2Ex", "telemetry.a1._.d", False),
        ("telemetry.a1.*.%2A", "telemetry.a1._.dev", False),
    ],
)
def test_subject_matches(pattern: str, subject: str, expected: bool) -> None:
    assert subject_matches(pattern, subject) is expected

"""Subjects on the bus: NATS-style matching, and the token escaping of domain.live.

A subject is dot-separated tokens (`telemetry.<account>.<project>.<device>`). A pattern is
the same with wildcards, as in NATS: `*` matches exactly one token, `>` (last) matches one or
more remaining tokens. The NATS bus hands patterns to the server unchanged, so the two
buses agree on what matches.
"""

from __future__ import annotations

from collections.abc import Sequence

from thinghub.domain.live import (
    NONE_TOKEN,
    WILDCARD,
    live_pattern,
    subject_of,
    subject_token,
    token_value,
)

__all__ = [
    "NONE_TOKEN",
    "REST",
    "WILDCARD",
    "live_pattern",
    "subject_matches",
    "subject_of",
    "subject_token",
    "token_value",
    "tokens_match",
]

REST = ">"  # in a pattern, last: one or more further tokens


def subject_matches(pattern: str, subject: str) -> bool:
    """Whether `subject` matches `pattern` (`*` one token, a last `>` one or more)."""
    return tokens_match(pattern.split("."), subject.split("."))


def tokens_match(want: Sequence[str], have: Sequence[str]) -> bool:
    """subject_matches on patterns and subjects already split into tokens."""
    for i, token in enumerate(want):
        if token == REST:
            return len(have) > i
        if i >= len(have) or (token != WILDCARD and token != have[i]):
            return False
    return len(want) == len(have)

"""A short, safe rendering of any value for an error message."""

from __future__ import annotations

import json
from typing import Any

__all__ = ["show"]


def show(value: Any) -> str:
    """`value` as JSON, cut to 60 characters (its repr when it is not JSON)."""
    try:
        text = json.dumps(value, default=str)
    except (TypeError, ValueError):
        text = repr(value)
    except RecursionError:  # bodies are depth-checked before they get here; be sure anyway
        text = "(a value nested too deep to show)"
    return text if len(text) <= 60 else text[:57] + "..."

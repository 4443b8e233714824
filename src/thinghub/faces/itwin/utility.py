"""The seed's three utility methods: authenticate, help and time.

- `authenticate {code}`: must be the first call; `code` is an API token or a JWT. The
  result is an object with `nextId` (the Python sample runs `"data" in result` on it, and the
  doc's samples take nextId as their next request id). It is always 1: clients send
  authenticate with id 0, and ids are never checked against a sequence anyway. A wrong code
  is AUTH_FAILED (-32002) and the connection stays usable; after MAX_AUTH_FAILURES the
  adapter closes it.
- `help`: every method with its params, as text, one method a line. Text because the
  seed's Python sample prints `"\\r\\n" + response["result"]`, which only works on a string;
  the same list as data is MethodTable.help_entries().
- `time`: `{"time": "<ISO ms Z>"}`; clients send it as a keep-alive.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Final, TypeVar

from thinghub.faces.itwin.methods import MethodTable
from thinghub.faces.itwin.params import AuthenticateParams, NoParams
from thinghub.faces.itwin.timestamps import format_time

__all__ = ["MAX_AUTH_FAILURES", "NEXT_ID", "add_utility_methods"]

Ctx = TypeVar("Ctx")

# Failed authenticate calls one connection may make before the adapter closes it.
MAX_AUTH_FAILURES: Final = 3
NEXT_ID: Final = 1


def add_utility_methods(
    table: MethodTable[Ctx],
    *,
    authenticate: Callable[[Ctx, str], Awaitable[None]],
    now: Callable[[], float],
) -> None:
    """Register authenticate, help and time on `table`.

    Args:
        table: the face's method table (help lists whatever it holds when called).
        authenticate: checks the code and records the principal in the context; raises
            domain Unauthorized for a wrong code (answered -32002).
        now: the clock, epoch seconds.
    """

    @table.call(
        "authenticate",
        AuthenticateParams,
        summary="Authenticate the connection with an API key or JWT; must be the first call.",
        needs_auth=False,
    )
    async def _authenticate(ctx: Ctx, params: AuthenticateParams) -> dict[str, Any]:
        await authenticate(ctx, params.code)
        return {"nextId": NEXT_ID}

    @table.call("help", NoParams, summary="All available methods and their params.")
    async def _help(ctx: Ctx, params: NoParams) -> str:
        return table.help_text()

    @table.call("time", NoParams, summary="The server's current time.")
    async def _time(ctx: Ctx, params: NoParams) -> dict[str, Any]:
        return {"time": format_time(now())}

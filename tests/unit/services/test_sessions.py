"""SessionService on the memory stores: a device adapter's MQTT session state, by client id."""

from __future__ import annotations

from thinghub.ports import Stores
from thinghub.services.core import Services


async def test_a_session_is_saved_loaded_replaced_and_deleted(
    services: Services, stores: Stores
) -> None:
    sessions = services.sessions
    assert await sessions.load("gw/m1") is None
    state = {"subscriptions": {"$iothub/methods/POST/#": 1}, "desired_version": 3}
    await sessions.save("gw/m1", state)
    assert await sessions.load("gw/m1") == state
    assert await stores.sessions.load("gw/m1") == state  # kept in the store, not in memory
    await sessions.save("gw/m1", {"subscriptions": {}})
    assert await sessions.load("gw/m1") == {"subscriptions": {}}
    await sessions.save("other", {"subscriptions": {}})
    await sessions.delete("gw/m1")
    assert await sessions.load("gw/m1") is None
    assert await sessions.load("other") == {"subscriptions": {}}
    await sessions.delete("gw/m1")  # deleting what is gone is no error

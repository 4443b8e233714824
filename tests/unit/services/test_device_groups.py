"""DeviceGroupService on the memory stores: saved filters per account, etag and If-Match,
and who may see and change them."""

from __future__ import annotations

import pytest

from thinghub.domain.errors import Forbidden, Invalid, NotFound, PreconditionFailed
from thinghub.domain.model import Principal, Role
from thinghub.services.core import Services

ADMIN = Principal("acc-1", Role.ADMIN, "admin")
OPERATOR = Principal("acc-1", Role.OPERATOR, "op")
VIEWER = Principal("acc-1", Role.VIEWER, "viewer")
IN_P1 = Principal("acc-1", Role.OPERATOR, "limited", project="p1")
OTHER = Principal("acc-2", Role.ADMIN, "other")


async def test_groups_are_saved_filters_with_etags(services: Services) -> None:
    groups = services.device_groups
    made = await groups.put(OPERATOR, "g1", display_name="Fleet", filter_text="enabled")
    assert (made.id, made.display_name, made.filter, made.description) == (
        "g1",
        "Fleet",
        "enabled",
        None,
    )
    assert await groups.get(VIEWER, "g1") == made
    with pytest.raises(PreconditionFailed):
        await groups.put(ADMIN, "g1", display_name="x", filter_text="x", if_match="old")
    again = await groups.put(
        ADMIN, "g1", display_name="Fleet 2", filter_text="enabled", if_match=made.etag
    )
    assert again.etag != made.etag
    assert again.created_at == made.created_at
    assert [g.id for g in await groups.list(VIEWER)] == ["g1"]
    with pytest.raises(PreconditionFailed):
        await groups.delete(ADMIN, "g1", if_match=made.etag)
    await groups.delete(ADMIN, "g1", if_match=again.etag)
    with pytest.raises(NotFound):
        await groups.get(ADMIN, "g1")


async def test_group_rules(services: Services) -> None:
    groups = services.device_groups
    for group_id, name, text in (
        ("bad id!", "x", "enabled"),
        ("g", "", "enabled"),
        ("g", "x", ""),
        ("g", None, "enabled"),
        ("g", "x", "y" * 5000),
    ):
        with pytest.raises(Invalid):
            await groups.put(ADMIN, group_id, display_name=name, filter_text=text)
    with pytest.raises(Forbidden):
        await groups.put(VIEWER, "g", display_name="x", filter_text="enabled")
    await groups.put(ADMIN, "g", display_name="x", filter_text="enabled")
    with pytest.raises(Forbidden):  # groups belong to the whole account
        await groups.get(IN_P1, "g")
    with pytest.raises(NotFound):  # and to one account
        await groups.get(OTHER, "g")
    assert await groups.list(OTHER) == []

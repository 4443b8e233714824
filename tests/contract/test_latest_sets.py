"""Latest values when a device's newest set stands for all its metrics (migration 0010,
`latest_sets` on SQLite), on every backend: metrics a newer set lacks keep their value, an
older set later adds only what is newer, a delete of the newest set falls back to the
newest left, retention keeps the latest values; separate batches, as separate commits."""

from __future__ import annotations

from tests.contract.test_observation_sets import ACC, T0, message
from thinghub.ports import Stores


async def latest_of(stores: Stores, device_id: str) -> dict[str, tuple[float, float]]:
    found = await stores.telemetry.latest(ACC, device_id)
    return {m: (round(o.ts - T0, 6), o.value) for m, o in found.items()}


async def test_the_same_metrics_batch_after_batch(stores: Stores) -> None:
    for n in range(5):
        batch = [message(f"dev-{d}", n * 10 + d, {"t": n + d / 10, "h": -n}) for d in range(3)]
        await stores.telemetry.append(batch)
    for d in range(3):
        assert await latest_of(stores, f"dev-{d}") == {"t": (40 + d, 4 + d / 10), "h": (40 + d, -4)}


async def test_metrics_a_newer_set_lacks_keep_their_value(stores: Stores) -> None:
    await stores.telemetry.append([message("dev-1", 1, {"a": 1.0, "b": 2.0})])
    await stores.telemetry.append([message("dev-1", 2, {"a": 3.0})])
    assert await latest_of(stores, "dev-1") == {"a": (2, 3.0), "b": (1, 2.0)}
    await stores.telemetry.append([message("dev-1", 3, {"c": 4.0})])
    await stores.telemetry.append([message("dev-1", 4, {"c": 5.0, "a": 6.0})])
    assert await latest_of(stores, "dev-1") == {"a": (4, 6.0), "b": (1, 2.0), "c": (4, 5.0)}
    # The same metrics in another order are the same metrics.
    await stores.telemetry.append([message("dev-1", 5, {"a": 7.0, "c": 8.0})])
    assert await latest_of(stores, "dev-1") == {"a": (5, 7.0), "b": (1, 2.0), "c": (5, 8.0)}


async def test_an_older_set_later_adds_only_what_is_newer(stores: Stores) -> None:
    await stores.telemetry.append([message("dev-1", 20, {"a": 1.0, "b": 2.0})])
    await stores.telemetry.append([message("dev-1", 10, {"a": -1.0, "c": 3.0})])
    assert await latest_of(stores, "dev-1") == {"a": (20, 1.0), "b": (20, 2.0), "c": (10, 3.0)}
    await stores.telemetry.append([message("dev-1", 15, {"a": -2.0, "b": -2.0})])
    assert await latest_of(stores, "dev-1") == {"a": (20, 1.0), "b": (20, 2.0), "c": (10, 3.0)}
    # On an equal time the later write wins, as within a batch.
    await stores.telemetry.append([message("dev-1", 20, {"a": 9.0, "b": 9.5})])
    assert await latest_of(stores, "dev-1") == {"a": (20, 9.0), "b": (20, 9.5), "c": (10, 3.0)}


async def test_deleting_the_newest_set_falls_back_to_the_newest_left(stores: Stores) -> None:
    await stores.telemetry.append([message("dev-1", 1, {"a": 1.0, "b": 2.0})])
    await stores.telemetry.append([message("dev-1", 2, {"a": 3.0, "b": 4.0})])
    await stores.telemetry.append([message("dev-1", 3, {"a": 5.0, "b": 6.0, "c": 7.0})])
    await stores.telemetry.append([message("dev-2", 3, {"a": 50.0})])
    deleted = await stores.telemetry.delete_for_device(ACC, "dev-1", T0 + 2.5, None, 100)
    assert deleted == 1
    assert await latest_of(stores, "dev-1") == {"a": (2, 3.0), "b": (2, 4.0)}
    assert await latest_of(stores, "dev-2") == {"a": (3, 50.0)}  # another device's stay
    history = await stores.telemetry.observations(ACC, "dev-1", "a", None, None, 10)
    assert [o.value for o in history] == [3.0, 1.0]
    # Every set gone: no latest value is left either.
    await stores.telemetry.delete_for_device(ACC, "dev-1", None, None, 100)
    assert await latest_of(stores, "dev-1") == {}


async def test_retention_keeps_the_latest_values(stores: Stores) -> None:
    for n in range(4):
        await stores.telemetry.append([message("dev-1", n, {"a": float(n), "b": -float(n)})])
    deleted = await stores.telemetry.purge(ACC, T0 + 2.5, 100)
    assert deleted == 3
    assert await stores.telemetry.observations(ACC, "dev-1", "a", None, None, 10) != []
    assert len(await stores.telemetry.observations(ACC, "dev-1", "a", None, None, 10)) == 1
    assert await latest_of(stores, "dev-1") == {"a": (3, 3.0), "b": (3, -3.0)}
    deleted = await stores.telemetry.purge(ACC, T0 + 10, 100)
    assert deleted == 1
    assert await stores.telemetry.observations(ACC, "dev-1", "a", None, None, 10) == []
    assert await latest_of(stores, "dev-1") == {"a": (3, 3.0), "b": (3, -3.0)}


async def test_a_batch_mixing_both_ways_of_keeping_latest(stores: Stores) -> None:
    """dev-1's sets differ in metrics (each upserts its values), dev-2's do not (its newest
    stands for them), in one batch, after a batch that stored both ways."""
    await stores.telemetry.append(
        [message("dev-1", 1, {"a": 1.0}), message("dev-2", 1, {"a": 1.0, "b": 1.0})]
    )
    await stores.telemetry.append(
        [
            message("dev-1", 2, {"a": 2.0, "b": 2.0}),
            message("dev-2", 2, {"a": 2.0, "b": 2.0}),
            message("dev-1", 3, {"c": 3.0}),
            message("dev-2", 3, {"a": 3.0, "b": 3.0}),
        ]
    )
    assert await latest_of(stores, "dev-1") == {"a": (2, 2.0), "b": (2, 2.0), "c": (3, 3.0)}
    assert await latest_of(stores, "dev-2") == {"a": (3, 3.0), "b": (3, 3.0)}
    await stores.telemetry.append([message("dev-2", 4, {"c": 4.0})])
    assert await latest_of(stores, "dev-2") == {"a": (3, 3.0), "b": (3, 3.0), "c": (4, 4.0)}

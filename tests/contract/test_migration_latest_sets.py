"""Migration 0010 (`latest_sets`) on SQLite and PostgreSQL: the latest values read the same
through the store after the upgrade, after the store kept some of them as sets, and after a
downgrade, which moves the sets' values into `latest_observations`."""

from __future__ import annotations

from tests.contract.conftest import _in_thread
from tests.contract.test_migrations import Database, database
from thinghub.domain.telemetry import TelemetryMessage
from thinghub.storage.migrate import downgrade, upgrade

__all__ = ["database"]  # the fixture, shared with test_migrations

ACC = "acc-1"
T0 = 1_790_000_000.0


def _message(device_id: str, seconds: int, body: dict[str, object]) -> TelemetryMessage:
    return TelemetryMessage(
        account_id=ACC, device_id=device_id, enqueued_at=T0 + seconds, body=body, raw=b""
    )


async def _append(database: Database, *batches: list[TelemetryMessage]) -> None:
    stores = database.stores()
    await stores.start()
    try:
        for batch in batches:
            await stores.telemetry.append(batch)
    finally:
        await stores.close()


async def _latest(database: Database) -> dict[str, dict[str, tuple[float, float]]]:
    stores = database.stores()
    await stores.start()
    try:
        out = {}
        for device in ("d1", "d2"):
            found = await stores.telemetry.latest(ACC, device)
            out[device] = {m: (o.ts - T0, o.value) for m, o in found.items()}
        return out
    finally:
        await stores.close()


def _latest_rows(database: Database) -> dict[tuple[str, str], tuple[float, float]]:
    rows = database.rows("SELECT entity_id, metric, ts, value FROM latest_observations")
    return {(e, m): (round(ts / 1_000_000 - T0, 6), v) for e, m, ts, v in rows}


def _count(database: Database, table: str) -> int:
    return int(database.rows(f"SELECT count(*) FROM {table}")[0][0])


async def test_latest_values_read_the_same_across_0010_both_ways(database: Database) -> None:
    _in_thread(lambda: upgrade(database.url, "0009"))
    marks = "?, ?, ?, ?, ?" if database.marker == "?" else "$1, $2, $3, $4, $5"
    for metric, value in (("a", 1.0), ("b", 2.0)):  # what 0009's store wrote for a message
        database.run(
            "INSERT INTO latest_observations (account_id, entity_id, metric, ts, value) "
            f"VALUES ({marks})",
            (ACC, "d1", metric, int((T0 + 1) * 1_000_000), value),
        )

    _in_thread(lambda: upgrade(database.url, "0010"))
    assert await _latest(database) == {"d1": {"a": (1, 1.0), "b": (1, 2.0)}, "d2": {}}
    await _append(
        database,
        [_message("d1", 2, {"a": 3.0}), _message("d2", 2, {"c": 4.0, "d": 5.0})],
        [_message("d2", 3, {"c": 6.0, "d": 7.0})],
    )
    expected = {"d1": {"a": (2, 3.0), "b": (1, 2.0)}, "d2": {"c": (3, 6.0), "d": (3, 7.0)}}
    assert await _latest(database) == expected
    if database.marker == "?":  # SQLite's writer keeps a device's newest set as one row
        assert _count(database, "latest_sets") == 2

    _in_thread(lambda: downgrade(database.url, "0009"))
    # 0009's store read latest_observations alone: every latest value is there now.
    assert _latest_rows(database) == {
        (device, metric): value for device, found in expected.items()
        for metric, value in found.items()
    }  # fmt: skip

    _in_thread(lambda: upgrade(database.url))
    assert await _latest(database) == expected

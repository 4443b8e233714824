"""Observation sets (migration 0009) on every backend: a batch of many sets (more than one
SQLite upsert statement holds) keeps the latest value of each metric right, the later of two
sets at the same time wins, metric names that a JSON path cannot spell read back, every double
reads back exactly; and on the SQL drivers an `append` step stores every row or fails."""

from __future__ import annotations

import pytest

from tests.contract.conftest import Backend
from thinghub.domain.telemetry import TelemetryMessage
from thinghub.ports import Stores
from thinghub.storage.database import Step

ACC = "acc-1"
T0 = 1_790_000_000.0


def message(device_id: str, seconds: float, body: dict[str, object]) -> TelemetryMessage:
    return TelemetryMessage(
        account_id=ACC,
        device_id=device_id,
        enqueued_at=round(T0 + seconds, 6),
        body=body,
        raw=b"",
        project="p1",
    )


async def test_a_big_batch_keeps_every_value_and_the_newest_as_latest(stores: Stores) -> None:
    devices = [f"dev-{i}" for i in range(7)]
    # 700 sets in one call (SQLite upserts the latest values 249 sets a statement), the
    # devices interleaved, each device's last two messages at the same time.
    batch = []
    for n in range(100):
        for d, device_id in enumerate(devices):
            seconds = min(n, 98)  # messages 98 and 99 share a time: the later one wins
            batch.append(message(device_id, seconds, {"t": n * 10.0 + d, "h": float(n)}))
    assert await stores.telemetry.append(batch) == [True] * len(batch)
    for d, device_id in enumerate(devices):
        latest = await stores.telemetry.latest(ACC, device_id)
        assert {m: o.value for m, o in latest.items()} == {"t": 990.0 + d, "h": 99.0}
        history = await stores.telemetry.observations(ACC, device_id, "t", None, None, 1000)
        assert len(history) == 100
        assert sorted(o.value for o in history) == [n * 10.0 + d for n in range(100)]
    # An older message later does not replace the latest.
    await stores.telemetry.append([message("dev-0", 5, {"t": -1.0})])
    assert (await stores.telemetry.latest(ACC, "dev-0"))["t"].value == 990.0


@pytest.mark.parametrize(
    "metric",
    ['say "hi"', "back\\slash", "tab\there", "a.b", "$.x", "ü ñ", "1", "[0]", "*"],
)
async def test_any_metric_name_reads_back(stores: Stores, metric: str) -> None:
    await stores.telemetry.append(
        [message("dev-1", 1, {metric: 1.5, "other": 2.0}), message("dev-1", 2, {metric: 2.5})]
    )
    history = await stores.telemetry.observations(ACC, "dev-1", metric, None, None, 10)
    assert [o.value for o in history] == [2.5, 1.5]
    streamed = [
        row
        async for page in stores.telemetry.stream_observations(ACC, "dev-1", metric, None, None, 10)
        for row in page
    ]
    assert [value for _, value in streamed] == [1.5, 2.5]
    assert (await stores.telemetry.latest(ACC, "dev-1"))[metric].value == 2.5
    assert await stores.telemetry.observations(ACC, "dev-1", "absent", None, None, 10) == []


async def test_every_double_reads_back_exactly(stores: Stores) -> None:
    values = [0.1 + 0.2, 5e-324, 2.2250738585072014e-308, 1.7976931348623157e308, -0.0, 1e22,
              123456789.12345679, 2.0**53 + 2]  # fmt: skip
    await stores.telemetry.append(
        [message("dev-1", i, {"x": value}) for i, value in enumerate(values)]
    )
    history = await stores.telemetry.observations(ACC, "dev-1", "x", None, None, 100)
    assert [o.value for o in reversed(history)] == values


_APPEND = (
    "INSERT INTO telemetry (account_id, device_id, project, deployment, enqueued_at, body, "
    "raw, properties, message_id, correlation_id, content_type, content_encoding, component, "
    "source) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)"
)


def _row(device_id: str | None, us: int) -> tuple[object, ...]:
    return (ACC, device_id, None, None, us, "{}", None, None, None, None, None, None, None, "t")


async def test_an_append_step_stores_every_row_or_fails(sql_backend: Backend) -> None:
    stores = await sql_backend.open()
    db = stores.telemetry.db  # type: ignore[attr-defined]
    rows = [_row(f"dev-{i}", i) for i in range(600)]  # several statements on SQLite
    await db.write([Step("append", _APPEND, rows)])
    count = "SELECT count(*) FROM telemetry WHERE account_id = ?"
    assert await db.fetch_one(count, [ACC]) == (600,)
    # One row breaks NOT NULL: the plain INSERT would fail, so the step fails and the unit
    # stores nothing (SQLite runs it as INSERT OR IGNORE and counts what it stored).
    bad = [_row("dev-x", 1000), _row(None, 1001), _row("dev-y", 1002)]
    with pytest.raises(Exception, match="(?i)not.null|refused"):
        await db.write([Step("append", _APPEND, bad)])
    assert await db.fetch_one(count, [ACC]) == (600,)
    if sql_backend.name == "sqlite":  # an append step that could be refused is a bug
        with pytest.raises(ValueError, match="plain INSERT"):
            await db.write([Step("append", f"{_APPEND} ON CONFLICT DO NOTHING", [_row("d", 1)])])


async def test_latest_values_of_a_batch_with_mixed_sets(stores: Stores) -> None:
    """One call, one device: sets of different metrics, and a set older than the one before
    it; the latest value of each metric is its newest, wherever it sits in the batch."""
    batch = [
        message("dev-1", 10, {"a": 1.0, "b": 1.0}),
        message("dev-1", 11, {"b": 2.0}),  # other metrics: a's latest stays at 10
        message("dev-1", 12, {"a": 3.0, "b": 3.0}),
        message("dev-2", 20, {"t": 20.0}),
        message("dev-2", 15, {"t": 15.0}),  # older, same metrics: not the latest
        message("dev-3", 5, {"t": 5.0}),
        message("dev-3", 5, {"t": 6.0}),  # the same time: the later one
    ]
    assert await stores.telemetry.append(batch) == [True] * len(batch)

    async def latest(device_id: str) -> dict[str, tuple[float, float]]:
        found = await stores.telemetry.latest(ACC, device_id)
        return {m: (round(o.ts - T0, 6), o.value) for m, o in found.items()}

    assert await latest("dev-1") == {"a": (12, 3.0), "b": (12, 3.0)}
    assert await latest("dev-2") == {"t": (20, 20.0)}
    assert await latest("dev-3") == {"t": (5, 6.0)}
    await stores.telemetry.append(
        [message("dev-1", 13, {"c": 4.0}), message("dev-1", 14, {"a": 5.0})]
    )
    assert await latest("dev-1") == {"a": (14, 5.0), "b": (12, 3.0), "c": (13, 4.0)}

"""IoT Central's query language subset (faces/central/query.py): parsing and evaluation."""

from __future__ import annotations

import re
from typing import Any

import pytest

from thinghub.domain.errors import Invalid
from thinghub.faces.central.query import MAX_TOP, parse_duration, parse_query

T = "dtmi:com:example:thermostat;1"
NOW = 10_000.0
ROWS: list[dict[str, Any]] = [
    {"$id": "a", "$ts": 9_000.0, "temperature": 21, "humidity": 40},
    {"$id": "a", "$ts": 9_500.0, "temperature": 19},
    {"$id": "b", "$ts": 9_700.0, "temperature": 25, "thermostat1.temperature": 3},
    {"$id": "b", "$ts": 1_000.0, "temperature": 30},  # the oldest row
    {"$id": "c", "$ts": 9_900.0, "status": "ok"},
]


def run(text: str) -> list[dict[str, Any]]:
    return parse_query(text).run(ROWS, NOW)


def test_select_where_order_top() -> None:
    assert run(f"SELECT $id, $ts, temperature FROM {T} WHERE temperature > 20 ORDER BY $ts") == [
        {"$id": "b", "$ts": 1_000.0, "temperature": 30},
        {"$id": "a", "$ts": 9_000.0, "temperature": 21},
        {"$id": "b", "$ts": 9_700.0, "temperature": 25},
    ]
    assert run(f"select top 1 $id, temperature from {T} order by temperature desc") == [
        {"$id": "b", "temperature": 30}
    ]
    # A window of the last 1000 s; a component's field; AS names a column.
    assert run(
        f"SELECT $id, thermostat1.temperature AS t1 FROM {T} WHERE WITHIN_WINDOW(PT1000S)"
    ) == [{"$id": "b", "t1": 3}]
    # Rows without any selected field are not results; strings compare.
    assert run(f"SELECT $id, status FROM {T} WHERE status = 'ok' OR $id = 'zzz'") == [
        {"$id": "c", "status": "ok"}
    ]
    assert run(f"SELECT $id FROM {T} WHERE NOT ($id = 'a' OR $id = 'b')") == [{"$id": "c"}]
    assert parse_query(f"SELECT $id FROM {T} WHERE WITHIN_WINDOW(P1D)").since(NOW) == NOW - 86_400


def test_aggregates_over_windows_and_devices() -> None:
    assert run(f"SELECT AVG(temperature), COUNT(temperature) FROM {T}") == [
        {"avg_temperature": 23.75, "count_temperature": 4}
    ]
    by_window = run(
        f"SELECT $ts, MAX(temperature) AS hi, MIN(temperature) FROM {T} "
        "WHERE WITHIN_WINDOW(PT2000S) GROUP BY WINDOW(PT1000S)"
    )
    assert by_window == [
        {"$ts": 9_000.0, "hi": 25, "min_temperature": 19},
    ]
    per_device = run(f"SELECT $id, SUM(temperature) FROM {T} GROUP BY $id ORDER BY $id DESC")
    assert per_device == [
        {"$id": "c", "sum_temperature": None},
        {"$id": "b", "sum_temperature": 55},
        {"$id": "a", "sum_temperature": 40},
    ]


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("", "non-empty"),
        ("SELECT", "expected a field"),
        (f"SELECT temperature {T}", "expected FROM"),
        (f"SELECT temperature FROM {T} WHERE", "expected a value or field"),
        (f"SELECT temperature FROM {T} WHERE temperature", "expected a comparison"),
        (f"SELECT temperature FROM {T} WHERE WITHIN_WINDOW(1 day)", "expected a duration"),
        (f"SELECT temperature FROM {T} WHERE WITHIN_WINDOW(P0D)", "more than 0"),
        (f"SELECT TOP 0 temperature FROM {T}", f"TOP must be 1 to {MAX_TOP}"),
        (f"SELECT TOP x temperature FROM {T}", "whole number"),
        (f"SELECT temperature, AVG(humidity) FROM {T}", "temperature must be aggregated"),
        (f"SELECT temperature FROM {T} ORDER BY humidity", "names no selected column"),
        (f"SELECT temperature FROM {T} GROUP BY colour", "GROUP BY takes"),
        (f"SELECT temperature FROM {T} LIMIT 5", "unexpected 'LIMIT'"),
        (f"SELECT temperature FROM {T} WHERE " + "(" * 40 + "a = 1" + ")" * 40, "deeper"),
        ("SELECT x FROM " + T + " WHERE a = 'b", "unexpected"),
        ("x" * 5000, "longer than"),
    ],
)
def test_bad_queries_are_invalid_naming_query(text: str, needle: str) -> None:
    with pytest.raises(Invalid, match=re.escape(needle)) as caught:
        parse_query(text)
    assert caught.value.field == "query"


def test_durations() -> None:
    assert parse_duration("P1D") == 86_400
    assert parse_duration("PT10M") == 600
    assert parse_duration("P1W") == 604_800
    assert parse_duration("P1DT1H1M1.5S") == 86_400 + 3600 + 60 + 1.5
    for bad in ("P", "PT", "1D", "P1Y"):
        with pytest.raises(Invalid):
            parse_duration(bad)


def test_fields_are_what_the_query_selects_or_tests() -> None:
    query = parse_query(
        f"SELECT $id, $ts, AVG(temperature) AS t FROM {T} "
        f"WHERE (firmware = '1.0' OR NOT (thermostat1.target > 3)) AND WITHIN_WINDOW(P1D) "
        f"GROUP BY $id"
    )
    assert query.fields() == {"temperature", "firmware", "thermostat1.target"}
    assert parse_query(f"SELECT $id, $ts FROM {T}").fields() == frozenset()


def test_property_rows_without_a_time() -> None:
    """A device's properties as one row whose `$ts` is unknown (None): never in a window,
    left out of WINDOW groups, counted by COUNT whatever their type."""
    rows: list[dict[str, Any]] = [
        {"$id": "a", "$ts": None, "firmware": "1.0"},
        {"$id": "b", "$ts": 9_990.0, "firmware": "2.0", "target": 20},
    ]
    assert parse_query(f"SELECT $id FROM {T} WHERE WITHIN_WINDOW(PT1M)").run(rows, NOW) == [
        {"$id": "b"}
    ]
    assert parse_query(f"SELECT COUNT(firmware), SUM(target) FROM {T}").run(rows, NOW) == [
        {"count_firmware": 2, "sum_target": 20}
    ]
    assert parse_query(f"SELECT $ts, COUNT(firmware) FROM {T} GROUP BY WINDOW(PT1H)").run(
        rows, NOW
    ) == [{"$ts": 7_200.0, "count_firmware": 1}]

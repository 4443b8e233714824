"""The SQLite writer's cost per stored telemetry message (a micro-benchmark, no server).

`python -m bench.store_rows [--messages N] [--fields F]` writes N messages of F numeric fields
(100 devices in turn, times increasing) into a fresh database per schema, with the writer's
own connection settings and its own statements (`append_steps`, run by the writer's step
runner), one transaction per batch as a group commit does: batches of 200 and of 5 messages,
messages without an id (the C load generator's) and with one (the Azure SDK's: observations
written only for messages that landed). It prints microseconds of the writing thread's CPU
per message for each schema, and the ratio to the reference, in the same run.

Schemas: `0008` (the reference) is the schema before migration 0009, written as the store
did then: the messages with a `many` step (a multi-row INSERT ... ON CONFLICT DO NOTHING),
one `observations` row per numeric field (and its `ix_observations` entry), the latest
value of each (entity, metric) of a batch upserted once. `head` is the newest
migration with the store's statements: messages and sets without an id as `append` steps
(no statement journal, see storage/sqlite.py), one `observation_sets` row per message, the
latest values upserted from the sets in SQL, 249 sets a statement. `head, sets in message
order` leaves out the store's sort of the sets by entity.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from thinghub.domain.telemetry import TelemetryMessage, observation_values
from thinghub.storage import migrate
from thinghub.storage.database import Step
from thinghub.storage.sql._rows import telemetry_params, to_us
from thinghub.storage.sql.telemetry import _INSERT_TELEMETRY, append_steps, newest_per_metric
from thinghub.storage.sqlite import SqliteDatabase, _connect

__all__ = ["main"]

DEVICES = 100
BATCHES = (200, 5)

_OBS_COLUMNS = "(account_id, entity_id, metric, ts, value)"
_INSERT_ROW = f"INSERT INTO observations {_OBS_COLUMNS} VALUES (?,?,?,?,?)"
_UPSERT_ROW = (
    f"INSERT INTO latest_observations {_OBS_COLUMNS} VALUES (?,?,?,?,?) ON CONFLICT "
    "(entity_id, metric) DO UPDATE SET ts = excluded.ts, value = excluded.value "
    "WHERE excluded.ts >= latest_observations.ts"
)

_Steps = Callable[[Sequence[TelemetryMessage]], list[Step]]


def _rows_steps(messages: Sequence[TelemetryMessage]) -> list[Step]:
    """0008's statements: the message rows as now, then a row per numeric field in entity
    order (`landed` rows for messages with an id), the newest of each (entity, metric) of
    the plain rows upserted once, every landed row upserted."""
    steps = [  # the message rows as 0008 wrote them (a `many` step, with ON CONFLICT)
        Step("each", _INSERT_TELEMETRY, [telemetry_params(m) for m in messages if m.message_id]),
        Step("many", _INSERT_TELEMETRY, [telemetry_params(m) for m in messages
                                         if m.message_id is None]),
    ]  # fmt: skip
    plain: list[tuple[object, ...]] = []
    owned: list[tuple[tuple[object, ...], int]] = []
    ordinal = -1
    for m in messages:
        if m.message_id is not None:
            ordinal += 1
        ts = to_us(m.enqueued_at)
        for metric, value in observation_values(m):
            row = (m.account_id, m.device_id, metric, ts, value)
            if m.message_id is None:
                plain.append(row)
            else:
                owned.append((row, ordinal))
    plain.sort(key=lambda r: r[1])  # type: ignore[arg-type,return-value]
    owned.sort(key=lambda o: o[0][1])  # type: ignore[arg-type,return-value]
    if plain:
        steps += [
            Step("many", _INSERT_ROW, plain),
            Step("many", _UPSERT_ROW, newest_per_metric(plain)),
        ]
    if owned:
        steps += [Step("landed", _INSERT_ROW, owned), Step("landed", _UPSERT_ROW, owned)]
    return steps


def _schemas() -> list[tuple[str, str, _Steps]]:
    """(name, migration, statements)."""
    return [
        ("0008", "0008", _rows_steps),
        ("head", "head", append_steps),
        ("head, sets in message order", "head", lambda m: append_steps(m, by_key=False)),
    ]


def _messages(count: int, fields: int, with_ids: bool) -> list[TelemetryMessage]:
    start = 1_790_000_000.0
    out = []
    for i in range(count):
        body = {f"field{f}": 20.0 + (i * 7 + f) % 100 / 8 for f in range(fields)}
        out.append(
            TelemetryMessage(
                account_id="acct-bench",
                device_id=f"device-{i % DEVICES:05d}",
                enqueued_at=start + i * 1e-4,
                body=body,
                raw=b"",
                body_json=str(body).replace("'", '"').encode(),
                message_id=f"{i:032x}" if with_ids else None,
                project="p1",
            )
        )
    return out


def _run(path: Path, steps: _Steps, messages: list[TelemetryMessage], batch: int) -> float:
    """Thread CPU microseconds per message to write `messages` in transactions of `batch`."""
    conn = _connect(path, read_only=False)
    try:
        units = [steps(messages[i : i + batch]) for i in range(0, len(messages), batch)]
        cpu = time.thread_time()
        for unit in units:
            conn.execute("BEGIN IMMEDIATE")
            done: list[object] = []
            for step in unit:
                done.append(SqliteDatabase._run(conn, step, done))
            conn.execute("COMMIT")
        cpu = time.thread_time() - cpu
        return cpu * 1e6 / len(messages)
    finally:
        conn.close()


def _fresh(template: dict[str, Path], tmp: Path, migration: str, n: int) -> Path:
    if migration not in template:
        path = tmp / f"template-{len(template)}.db"
        migrate.upgrade(f"sqlite:///{path}", migration)
        template[migration] = path
    path = tmp / f"run-{n}.db"
    path.write_bytes(template[migration].read_bytes())
    return path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--messages", type=int, default=10_000)
    parser.add_argument("--fields", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3, help="runs of each cell (least kept)")
    parser.add_argument("--only", help="schemas whose name contains this (and 0008)")
    args = parser.parse_args(argv)
    cases = [(b, ids) for b in BATCHES for ids in (False, True)]
    schemas = [s for s in _schemas() if not args.only or args.only in s[0] or s[0] == "0008"]
    best: dict[tuple[str, int], float] = {}
    templates: dict[str, Path] = {}
    n = 0
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(args.rounds):  # rounds interleave the schemas: noise hits them alike
            for name, migration, steps in schemas:
                for c, (batch, ids) in enumerate(cases):
                    n += 1
                    path = _fresh(templates, Path(tmp), migration, n)
                    messages = _messages(args.messages, args.fields, ids)
                    cpu = _run(path, steps, messages, batch)
                    best[(name, c)] = min(cpu, best.get((name, c), cpu))
                    for suffix in ("", "-wal", "-shm"):
                        Path(f"{path}{suffix}").unlink(missing_ok=True)
    header = " | ".join(f"batch {b}{', ids' if ids else ''}" for b, ids in cases)
    print(
        f"µs of writer CPU per message, least of {args.rounds} runs "
        f"({args.messages:,} messages of {args.fields} fields, {DEVICES} devices)"
    )
    print(f"| schema | {header} |")
    print("| --- |" + " ---: |" * len(cases))
    for name, *_ in schemas:
        cells = " | ".join(
            f"{best[(name, c)]:.1f} ({best[(name, c)] / best[('0008', c)]:.2f}x)"
            for c in range(len(cases))
        )
        print(f"| {name} | {cells} |")


if __name__ == "__main__":
    main()

"""The SQLite writer's cost per stored telemetry message (a micro-benchmark, no server).

`python -m bench.store_rows [--messages N] [--fields F]` writes N messages of F numeric fields
(100 devices in turn, times increasing) into a fresh database per schema, with the writer's
own connection settings and its own statements (`append_steps`, run by the writer's step
runner), one transaction per batch as a group commit does: batches of 200 and of 5 messages,
messages without an id (the C load generator's) and with one (the Azure SDK's: guarded
observation inserts). It prints microseconds of the writing thread's CPU per message for
each schema, and the ratio to the schema before migration 0008 (the reference, same run).

Schemas: `0007` is the schema before migration 0008 (observations a rowid table with
`ix_observations` (entity_id, metric, ts) and `ix_observations_account`; latest_observations a
rowid table with its primary key's index), written as the store did then (rows in message
order); `head` is the newest migration with the store's statements; the others are the
candidates tried for 0008 (a `  +` line adds to the line above it), each with the statements
it needs.
"""

from __future__ import annotations

import argparse
import itertools
import sqlite3
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from thinghub.domain.telemetry import TelemetryMessage
from thinghub.storage import migrate
from thinghub.storage.database import Step
from thinghub.storage.sql.telemetry import append_steps
from thinghub.storage.sqlite import SqliteDatabase, _connect

__all__ = ["main"]

DEVICES = 100
BATCHES = (200, 5)

_OBS_COLUMNS = "(account_id, entity_id, metric, ts, value)"
_LANDED = (
    " WHERE EXISTS (SELECT 1 FROM telemetry WHERE device_id = ? AND message_id = ? "
    "AND enqueued_at = ?)"
)

# 0007's observation statements (what the store wrote before 0008).
_OLD_INSERT_PLAIN = f"INSERT INTO observations {_OBS_COLUMNS} VALUES (?,?,?,?,?)"
_OLD_INSERT_GUARDED = f"INSERT INTO observations {_OBS_COLUMNS} SELECT ?,?,?,?,?{_LANDED}"
_OLD_UPSERT_GUARDED = (
    f"INSERT INTO latest_observations {_OBS_COLUMNS} SELECT ?,?,?,?,?{_LANDED} ON CONFLICT "
    "(entity_id, metric) DO UPDATE SET ts = excluded.ts, value = excluded.value "
    "WHERE excluded.ts >= latest_observations.ts"
)

_DROP_ACCOUNT_INDEX = "DROP INDEX ix_observations_account"
_NOT_COVERING = (
    "DROP INDEX ix_observations",
    "CREATE INDEX ix_observations ON observations (entity_id, ts, metric)",
)
_LATEST_WITHOUT_ROWID = (
    "DROP TABLE latest_observations",
    "CREATE TABLE latest_observations (entity_id VARCHAR(260) NOT NULL, metric VARCHAR(256) "
    "NOT NULL, account_id VARCHAR(160) NOT NULL, ts BIGINT NOT NULL, value FLOAT NOT NULL, "
    "PRIMARY KEY (entity_id, metric)) WITHOUT ROWID",
)
_OBS_CLUSTERED = (
    "DROP TABLE observations",
    "CREATE TABLE observations (account_id VARCHAR(160) NOT NULL, entity_id VARCHAR(260) "
    "NOT NULL, metric VARCHAR(256) NOT NULL, ts BIGINT NOT NULL, value FLOAT NOT NULL, "
    "seq INTEGER NOT NULL, PRIMARY KEY (entity_id, metric, ts, seq)) WITHOUT ROWID",
)

_Steps = Callable[[Sequence[TelemetryMessage]], list[Step]]


def _old_steps(messages: Sequence[TelemetryMessage], by_key: bool = False) -> list[Step]:
    """0007's statements: the store's, with the rows of messages with an id guarded in SQL
    as they were (each row tests that its message's stored row is this message's), and the
    rows in message order unless `by_key`."""
    with_id = [m for m in messages if m.message_id is not None]
    out = []
    for step in append_steps(messages, by_key=by_key):
        if step.kind == "landed":
            sql = _OLD_UPSERT_GUARDED if "latest" in step.sql else _OLD_INSERT_GUARDED
            rows = []
            for row, owner in step.params:
                m = with_id[owner]
                rows.append((*row, m.device_id, m.message_id, row[3]))
            step = Step("many", sql, rows)
        out.append(step)
    return out


def _counter_steps(seq: itertools.count[int], by_key: bool = False) -> _Steps:
    """Clustered observations with the tiebreak from a counter (an upper bound: the
    cheapest a tiebreak can be)."""
    plain = f"INSERT INTO observations {_OBS_COLUMNS[:-1]}, seq) VALUES (?,?,?,?,?,?)"
    guarded = f"INSERT INTO observations {_OBS_COLUMNS[:-1]}, seq) SELECT ?,?,?,?,?,?{_LANDED}"

    def steps(messages: Sequence[TelemetryMessage]) -> list[Step]:
        out = []
        for step in _old_steps(messages, by_key):
            if step.sql == _OLD_INSERT_PLAIN:
                step = Step("many", plain, [(*r, next(seq)) for r in step.params])
            elif step.sql == _OLD_INSERT_GUARDED:
                step = Step("many", guarded, [(*r[:5], next(seq), *r[5:]) for r in step.params])
            out.append(step)
        return out

    return steps


def _max_steps(messages: Sequence[TelemetryMessage]) -> list[Step]:
    """Clustered observations with the tiebreak found in SQL: one more than the largest of
    the rows with the same key (0 for the first), row by row."""
    next_seq = (
        "COALESCE((SELECT max(seq) + 1 FROM observations WHERE entity_id = ?2 AND metric = ?3 "
        "AND ts = ?4), 0)"
    )
    plain = f"INSERT INTO observations {_OBS_COLUMNS[:-1]}, seq) SELECT ?1,?2,?3,?4,?5,{next_seq}"
    guarded = (
        plain + " WHERE EXISTS (SELECT 1 FROM telemetry WHERE device_id = ?6 AND "
        "message_id = ?7 AND enqueued_at = ?8)"
    )
    out = []
    for step in _old_steps(messages):
        if step.sql == _OLD_INSERT_PLAIN:
            step = Step("many", plain, step.params)
        elif step.sql == _OLD_INSERT_GUARDED:
            step = Step("many", guarded, step.params)
        out.append(step)
    return out


def _schemas() -> list[tuple[str, str, tuple[str, ...], _Steps]]:
    """(name, migration, DDL after it, statements)."""
    return [
        ("0007", "0007", (), _old_steps),
        ("head", "head", (), append_steps),
        ("head, rows in message order", "head", (), lambda m: append_steps(m, by_key=False)),
        ("head, ix_observations not covering", "head", _NOT_COVERING, append_steps),
        (
            "head, rows of messages with ids guarded in SQL",
            "head",
            (),
            lambda m: _old_steps(m, True),
        ),
        ("0007 - ix_observations_account", "0007", (_DROP_ACCOUNT_INDEX,), _old_steps),
        (
            "  + latest WITHOUT ROWID",
            "0007",
            (_DROP_ACCOUNT_INDEX, *_LATEST_WITHOUT_ROWID),
            _old_steps,
        ),
        (
            "  + observations clustered, seq counter",
            "0007",
            (*_LATEST_WITHOUT_ROWID, *_OBS_CLUSTERED),
            _counter_steps(itertools.count()),
        ),
        (
            "  + observations clustered, seq counter, rows by key",
            "0007",
            (*_LATEST_WITHOUT_ROWID, *_OBS_CLUSTERED),
            _counter_steps(itertools.count(), by_key=True),
        ),
        (
            "  + observations clustered, seq max+1",
            "0007",
            (*_LATEST_WITHOUT_ROWID, *_OBS_CLUSTERED),
            _max_steps,
        ),
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


def _fresh(template: dict[tuple[str, tuple[str, ...]], Path], tmp: Path, migration: str,
           ddl: tuple[str, ...], n: int) -> Path:  # fmt: skip
    key = (migration, ddl)
    if key not in template:
        path = tmp / f"template-{len(template)}.db"
        migrate.upgrade(f"sqlite:///{path}", migration)
        with sqlite3.connect(path) as conn:
            for statement in ddl:
                conn.execute(statement)
        template[key] = path
    path = tmp / f"run-{n}.db"
    path.write_bytes(template[key].read_bytes())
    return path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--messages", type=int, default=10_000)
    parser.add_argument("--fields", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3, help="runs of each cell (least kept)")
    parser.add_argument("--only", help="schemas whose name contains this (and 0007)")
    args = parser.parse_args(argv)
    cases = [(b, ids) for b in BATCHES for ids in (False, True)]
    schemas = [s for s in _schemas() if not args.only or args.only in s[0] or s[0] == "0007"]
    best: dict[tuple[str, int], float] = {}
    templates: dict[tuple[str, tuple[str, ...]], Path] = {}
    n = 0
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(args.rounds):  # rounds interleave the schemas: noise hits them alike
            for name, migration, ddl, steps in schemas:
                for c, (batch, ids) in enumerate(cases):
                    n += 1
                    path = _fresh(templates, Path(tmp), migration, ddl, n)
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
            f"{best[(name, c)]:.1f} ({best[(name, c)] / best[('0007', c)]:.2f}x)"
            for c in range(len(cases))
        )
        print(f"| {name} | {cells} |")


if __name__ == "__main__":
    main()

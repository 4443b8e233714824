"""Reading a JetStream key-value bucket: a watch without losing a cancellation, and every
current value at once without missing any.

nats-py's `KeyWatcher.updates` waits with `asyncio.wait_for`, which on Python 3.11 returns the
entry and drops the cancellation when the task is cancelled just as an entry arrives. A loop
that watches forever would then never stop (a node's shutdown waits on it). `next_entry`
raises the dropped cancellation: the task still counts it (`Task.cancelling()`).

A watch is no way to read what a bucket holds now: nats-py marks the end of the current
values by the push consumer's `num_pending`, read after the server began sending, and a
message already sent but not yet read is not pending, so the end marker can come before the
values (a node's scan once found no entries in a bucket that held two). `snapshot` reads with
a pull consumer instead, which sends nothing until asked: its `num_pending` is exact.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from typing import Any

import nats.errors
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

__all__ = ["KvValue", "next_entry", "snapshot"]

#: Messages asked for at a time by `snapshot`.
SNAPSHOT_BATCH = 256
# Headers of a delete or purge: nats-py's KV-Operation, and nats-server 2.11's markers.
_KV_OPERATION = "KV-Operation"
_MARKER_REASON = "Nats-Marker-Reason"


@dataclass(frozen=True, slots=True)
class KvValue:
    key: str
    value: bytes
    revision: int  # the stream sequence of the value (for a compare-and-delete)


async def next_entry(watcher: Any, timeout_s: float) -> Any:
    """The watcher's next entry (None at the end of what the bucket held when the watch
    began); raises `TimeoutError` after `timeout_s` and `CancelledError` if the task was
    cancelled meanwhile, even when the entry arrived at the same moment."""
    try:
        return await watcher.updates(timeout=timeout_s)
    finally:
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            raise asyncio.CancelledError


async def snapshot(js: JetStreamContext, bucket: str, timeout_s: float = 10.0) -> list[KvValue]:
    """Every key that `bucket` holds now, with its value (deleted keys left out).

    An ephemeral pull consumer of the bucket's stream, the last message of each key: its
    `num_pending` before the first fetch is the number of keys, and each message tells how
    many are left, so the read ends exactly after the last one (a key written meanwhile may
    be read too). Raises nats.errors.Error (TimeoutError included) if NATS does not answer.
    """
    stream, prefix = f"KV_{bucket}", f"$KV.{bucket}."
    config = ConsumerConfig(
        deliver_policy=DeliverPolicy.LAST_PER_SUBJECT,
        ack_policy=AckPolicy.ALL,
        inactive_threshold=max(timeout_s * 3, 30.0),
        mem_storage=True,
    )
    sub = await js.pull_subscribe(f"{prefix}>", stream=stream, config=config)
    found: list[KvValue] = []
    consumer: str | None = None
    try:
        info = await sub.consumer_info()
        consumer, pending = info.name, info.num_pending or 0
        while pending > 0:
            messages = await sub.fetch(min(pending, SNAPSHOT_BATCH), timeout=timeout_s)
            for msg in messages:
                headers = msg.headers or {}
                if _KV_OPERATION in headers or _MARKER_REASON in headers:
                    continue  # a delete or purge marker (a put carries neither)
                key = msg.subject[len(prefix) :]
                found.append(KvValue(key, msg.data, msg.metadata.sequence.stream))
            await messages[-1].ack()  # AckPolicy.ALL: the batch
            pending = messages[-1].metadata.num_pending or 0
    finally:
        with contextlib.suppress(nats.errors.Error, TimeoutError):
            await sub.unsubscribe()
        if consumer is not None:  # ephemeral, but not left to linger
            with contextlib.suppress(nats.errors.Error, TimeoutError):
                await js.delete_consumer(stream, consumer)
    return found

"""`kv_watch.snapshot` against a real nats-server: every live key of a bucket, whatever its
size, deleted keys left out, and never an early end.

The scan it replaces (a watch read up to nats-py's end marker) once found no entries in a
bucket that held two, right after they were written: the marker can come before values the
server already sent. Here the same moves are repeated many times.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator

import nats
import pytest
from nats.aio.client import Client
from nats.js.kv import KeyValue

from tests.nats_server import NatsServer
from thinghub.services.kv_watch import SNAPSHOT_BATCH, snapshot


@pytest.fixture(scope="module")
def nats_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with NatsServer(tmp_path_factory.mktemp("nats")) as server:
        yield server.url


@pytest.fixture
async def client(nats_url: str) -> AsyncIterator[Client]:
    nc = await nats.connect(nats_url)
    yield nc
    await nc.close()


async def _bucket(nc: Client) -> tuple[str, KeyValue]:
    name = f"snap_{time.monotonic_ns()}"
    return name, await nc.jetstream().create_key_value(bucket=name, history=1)


async def test_every_live_key_of_a_big_bucket(client: Client) -> None:
    name, kv = await _bucket(client)
    keys = SNAPSHOT_BATCH * 2 + 17  # more than one fetch
    revisions = {}
    for n in range(keys):
        revisions[f"k{n}"] = await kv.put(f"k{n}", b"%d" % n)
    for n in range(0, keys, 3):  # every third deleted
        await kv.delete(f"k{n}")
        del revisions[f"k{n}"]
    await kv.put("k1", b"again")  # a key written twice: its newest value only
    revisions["k1"] = (await kv.get("k1")).revision
    found = await snapshot(client.jetstream(), name)
    assert {item.key: item.revision for item in found} == revisions
    values = {item.key: item.value for item in found}
    assert values["k1"] == b"again" and values["k2"] == b"2"
    assert len(found) == len(revisions)
    info = await client.jetstream().stream_info(f"KV_{name}")
    assert info.state.consumer_count == 0  # its consumer is gone


async def test_values_written_just_before_are_always_found(client: Client) -> None:
    name, kv = await _bucket(client)
    js = client.jetstream()
    for n in range(400):  # the old scan missed 8 in 1,000 on an idle machine
        await kv.put(f"here-{n}", b"1")
        await kv.put(f"gone-{n}", b"1")
        await kv.delete(f"gone-{n - 1}")
        found = {item.key for item in await snapshot(js, name)}
        assert {f"here-{n}", f"gone-{n}"} <= found, n
        assert f"gone-{n - 1}" not in found


async def test_an_empty_bucket(client: Client) -> None:
    name, kv = await _bucket(client)
    assert await snapshot(client.jetstream(), name) == []
    await kv.put("k", b"v")
    await kv.delete("k")
    assert await snapshot(client.jetstream(), name) == []

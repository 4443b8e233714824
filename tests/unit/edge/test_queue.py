"""Tests for thinghub.edge.queue: on disk, in order, bounded, counted, reopened."""

from __future__ import annotations

from pathlib import Path

from thinghub.edge.queue import ForwardQueue


async def test_rows_stay_until_removed_and_survive_a_reopen(tmp_path: Path) -> None:
    path = tmp_path / "q.sqlite"
    async with ForwardQueue(path) as queue:
        seqs = [await queue.put("port1", 1, f"{i}".encode(), float(i)) for i in range(5)]
        await queue.put("port2", 2, b"other", 9.0)
        rows = await queue.peek("port1", 0, 3)
        assert [r.body for r in rows] == [b"0", b"1", b"2"]
        assert [r.body for r in await queue.peek("port1", rows[-1].seq, 10)] == [b"3", b"4"]
        await queue.remove(seqs[:2])
        epoch = queue.epoch
    async with ForwardQueue(path) as again:
        assert again.epoch == epoch
        assert [r.body for r in await again.peek("port1", 0, 10)] == [b"2", b"3", b"4"]
        assert again.stats().as_json() == {"queued": 4, "accepted": 6, "sent": 2, "dropped": 0}
        assert again.message_id(7) == f"{epoch}-7"


async def test_a_full_queue_drops_the_oldest_and_counts(tmp_path: Path) -> None:
    async with ForwardQueue(tmp_path / "q.sqlite", max_items=3) as queue:
        await queue.put_many([("m", 1, f"{i}".encode(), 0.0) for i in range(5)])
        assert [r.body for r in await queue.peek("m", 0, 10)] == [b"2", b"3", b"4"]
        await queue.put("m", 1, b"5", 0.0)
        assert [r.body for r in await queue.peek("m", 0, 10)] == [b"3", b"4", b"5"]
        assert queue.stats().as_json() == {"queued": 3, "accepted": 6, "sent": 0, "dropped": 3}


async def test_a_new_file_draws_a_new_epoch(tmp_path: Path) -> None:
    async with ForwardQueue(tmp_path / "a.sqlite") as a, ForwardQueue(tmp_path / "b.sqlite") as b:
        assert a.epoch != b.epoch

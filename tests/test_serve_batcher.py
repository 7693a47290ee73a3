"""The window batcher on its own (pure asyncio): what arrives while a batch runs goes into the next one."""
from __future__ import annotations

import asyncio

import pytest

from serve.batcher import WindowBatcher


class SlowDoubler:
    """A batch function that takes a while, like an engine call, and records the batches it was given."""

    def __init__(self, seconds: float = 0.05):
        self.seconds, self.batches = seconds, []

    async def __call__(self, items: list[int]) -> list[int]:
        self.batches.append(list(items))
        await asyncio.sleep(self.seconds)
        if any(i < 0 for i in items):
            raise ValueError("negative item")
        return [2 * i for i in items]


def test_arrivals_during_a_batch_go_together_into_the_next():
    async def scenario():
        run = SlowDoubler()
        batcher = WindowBatcher(run, max_batch_size=64, wait_s=0.0)
        first = asyncio.create_task(batcher.submit(0))
        await asyncio.sleep(0.01)  # the first batch is running
        rest = await asyncio.gather(*(batcher.submit(i) for i in range(1, 9)))
        return run.batches, await first, rest

    batches, first, rest = asyncio.run(scenario())
    assert batches == [[0], list(range(1, 9))]
    assert first == 0 and rest == [2 * i for i in range(1, 9)]


def test_max_batch_size_splits_and_cancelled_items_are_skipped():
    async def scenario():
        run = SlowDoubler()
        batcher = WindowBatcher(run, max_batch_size=3, wait_s=0.01)
        tasks = [asyncio.create_task(batcher.submit(i)) for i in range(7)]
        await asyncio.sleep(0)
        tasks[6].cancel()
        results = await asyncio.gather(*tasks[:6])
        return run.batches, results

    batches, results = asyncio.run(scenario())
    assert batches == [[0, 1, 2], [3, 4, 5]]
    assert results == [0, 2, 4, 6, 8, 10]


def test_a_failed_batch_fails_its_callers_and_the_batcher_goes_on():
    async def scenario():
        batcher = WindowBatcher(SlowDoubler(0.0), max_batch_size=8, wait_s=0.01)
        failed = await asyncio.gather(batcher.submit(1), batcher.submit(-1), return_exceptions=True)
        return failed, await batcher.submit(4)

    failed, later = asyncio.run(scenario())
    assert all(isinstance(e, ValueError) for e in failed)
    assert later == 8


def test_max_batch_size_must_be_positive():
    with pytest.raises(ValueError, match="max_batch_size"):
        WindowBatcher(SlowDoubler(), max_batch_size=0, wait_s=0.0)

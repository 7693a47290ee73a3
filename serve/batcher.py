"""Gathering the windows of concurrent requests into engine calls, one call at a time.

Whatever arrives while the engine is busy waits, and goes into the next call together (up to
`max_batch_size`); a window arriving at an idle engine waits `wait_s` for company. So under load every
engine call carries the current window of (nearly) every request in flight, and no request waits for more
than the call in progress.

Why not `@serve.batch`: it forms the next batch `batch_wait_timeout_s` after its first item arrives, even
while the previous batch is still running, and queues it; with engine calls that take seconds the batches
stay small (measured with bench/bench_serve.py: about 2.4 windows per call from 8 concurrent requests).
"""
from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")


class WindowBatcher(Generic[Item, Result]):
    def __init__(self, run_batch: Callable[[list[Item]], Awaitable[list[Result]]], max_batch_size: int,
                 wait_s: float):
        if max_batch_size < 1:
            raise ValueError(f"max_batch_size must be >= 1, got {max_batch_size}")
        self._run_batch = run_batch
        self.max_batch_size, self.wait_s = max_batch_size, wait_s
        self._pending: list[tuple[Item, asyncio.Future]] = []
        self._arrived: asyncio.Event | None = None
        self._worker: asyncio.Task | None = None

    async def submit(self, item: Item) -> Result:
        """The result for `item`, computed in a batch with the items of other callers."""
        if self._worker is None or self._worker.done():  # first use, in the loop that serves requests
            self._arrived = asyncio.Event()
            self._worker = asyncio.get_running_loop().create_task(self._work())
        future = asyncio.get_running_loop().create_future()
        self._pending.append((item, future))
        self._arrived.set()
        return await future  # a cancelled caller's item is skipped if its batch has not started

    async def _work(self) -> None:
        while True:
            await self._arrived.wait()
            if self.wait_s:
                await asyncio.sleep(self.wait_s)
            self._pending = [(i, f) for i, f in self._pending if not f.cancelled()]
            batch, self._pending = self._pending[: self.max_batch_size], self._pending[self.max_batch_size:]
            if not self._pending:
                self._arrived.clear()
            if not batch:
                continue
            try:
                results = await self._run_batch([item for item, _ in batch])
                if len(results) != len(batch):
                    raise RuntimeError(f"batch of {len(batch)} items gave {len(results)} results")
            except Exception as e:  # every caller in the batch hears about it; the batcher goes on
                for _, future in batch:
                    if not future.done():
                        future.set_exception(e)
                continue
            for (_, future), result in zip(batch, results):
                if not future.done():
                    future.set_result(result)

"""An event loop on a thread of its own, for engines whose async machinery must live on one loop.

vLLM's async engine binds its output handler to the loop it first runs on, and the transformers worker
queue is an asyncio queue; their callers come from many loops (a Serve replica's, a Ray async actor's, the
loop `Engine.generate` makes for a synchronous caller). So the engine's coroutines all run here, and
callers await them from wherever they are:

    caller's loop ── await engine_loop.call(coro) ──▶ engine loop thread ── coro ──▶ engine
          ▲ cancel the caller's task ─────────────────▶ the coro is cancelled (the engine aborts the prompt)
"""
from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


class EngineLoop:
    def __init__(self, name: str):
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name=name, daemon=True)
        self._thread.start()

    def run(self, coroutine: Coroutine[Any, Any, T], timeout_s: float | None = None) -> T:
        """Run on the engine loop and wait, from a thread that is not the engine loop's."""
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout_s)

    async def call(self, coroutine: Coroutine[Any, Any, T]) -> T:
        """Await `coroutine` on the engine loop from any loop; cancelling the caller cancels it there."""
        if asyncio.get_running_loop() is self.loop:
            return await coroutine
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coroutine, self.loop))

    def close(self) -> None:
        if self.loop.is_closed():
            return
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=30)
        if not self._thread.is_alive():
            self.loop.close()

"""Load on a reranking service: clients in a closed loop (each sends its next request when the last is answered),
as many as asked at each moment, every outcome recorded with its own request id.

The load runs on an event loop of its own, in a thread, so that the caller watches the service meanwhile.
"""
from __future__ import annotations

import asyncio
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any

import httpx

REQUEST_ID_HEADER = "x-request-id"  # Serve takes the client's id for the request and logs it


@dataclass(frozen=True)
class Outcome:
    request_id: str
    started: float  # time.monotonic()
    finished: float
    status: int  # HTTP status; 0: no answer (the connection failed)
    order: tuple[int, ...] | None  # the result indices, best first, of an answered request
    error: str | None = None

    @property
    def latency_s(self) -> float:
        return self.finished - self.started


class RerankLoad:
    """`clients(n, pause_s)` sets how many clients post `body` to `path` from now on, each pausing `pause_s`
    between its requests; `outcomes` holds what was answered, `in_flight` what was sent and not yet."""

    def __init__(self, base_url: str, body: dict[str, Any], path: str = "/v2/rerank", timeout_s: float = 60):
        self.base_url, self.body, self.path, self.timeout_s = base_url, body, path, timeout_s
        self.outcomes: list[Outcome] = []
        self.in_flight = 0
        self._prefix = f"load-{uuid.uuid4().hex[:8]}"
        self._sent = 0
        self._wanted, self._pause_s = 0, 0.0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="rerank-load", daemon=True)
        self._tasks: list[asyncio.Task] = []

    def __enter__(self) -> "RerankLoad":
        self._thread.start()
        self._client = asyncio.run_coroutine_threadsafe(self._open(), self._loop).result()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.clients(0)
        asyncio.run_coroutine_threadsafe(self._close(), self._loop).result(self.timeout_s + 5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()

    def clients(self, n: int, pause_s: float = 0.0) -> None:
        """From now on `n` clients (a client past the new number stops after its current request)."""
        asyncio.run_coroutine_threadsafe(self._set(n, pause_s), self._loop).result()

    def wait_idle(self, timeout_s: float) -> None:
        """Until every request sent has been answered."""
        deadline = time.monotonic() + timeout_s
        while self.in_flight and time.monotonic() < deadline:
            time.sleep(0.05)

    async def _open(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.base_url, timeout=self.timeout_s,
                                 limits=httpx.Limits(max_connections=None, max_keepalive_connections=64))

    async def _close(self) -> None:
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._client.aclose()

    async def _set(self, n: int, pause_s: float) -> None:
        self._wanted, self._pause_s = n, pause_s
        self._tasks = [t for t in self._tasks if not t.done()]
        running = len(self._tasks)
        self._tasks += [asyncio.create_task(self._client_loop(i)) for i in range(running, n)]

    async def _client_loop(self, index: int) -> None:
        while index < self._wanted:
            await self._post()
            if self._pause_s:
                await asyncio.sleep(self._pause_s)

    async def _post(self) -> None:
        self._sent += 1
        request_id = f"{self._prefix}-{self._sent}"
        self.in_flight += 1
        started = time.monotonic()
        try:
            r = await self._client.post(self.path, json=self.body, headers={REQUEST_ID_HEADER: request_id})
            order = tuple(x["index"] for x in r.json()["results"]) if r.status_code == 200 else None
            outcome = Outcome(request_id, started, time.monotonic(), r.status_code, order,
                              None if r.status_code == 200 else r.text[:200])
        except (httpx.HTTPError, ValueError, KeyError) as e:
            outcome = Outcome(request_id, started, time.monotonic(), 0, None, f"{type(e).__name__}: {e}")
        finally:
            self.in_flight -= 1
        self.outcomes.append(outcome)

"""The replica's engine with its health tracked: a decorator around the engine the Reranker drives.

A prompt the engine refuses for what it is (`EngineInputError`: too long for its context) is the client's
fault and leaves the engine healthy. Anything else the engine raises is its own failure: the call raises
`EngineFailure` and the engine is suspect until it answers a one-token probe (`alive`), which /health and
Serve's health check ask for. A window that succeeds clears the suspicion too.
"""
from __future__ import annotations

import asyncio
import logging
from typing import Any

from reasonrank.engines.base import Engine, EngineInputError, Generation, Messages, SamplingParams

logger = logging.getLogger("ray.serve")

_PROBE: Messages = [{"role": "user", "content": "ping"}]


class EngineFailure(RuntimeError):
    """The engine raised while generating a window."""


class HealthTrackedEngine(Engine):
    def __init__(self, engine: Engine, probe_timeout_s: float):
        self.engine, self.probe_timeout_s = engine, probe_timeout_s
        self.name = engine.name
        self.failure: str | None = None  # what the engine last raised, until it answers again

    async def agenerate(self, messages: Messages, params: SamplingParams) -> list[Generation]:
        try:
            generations = await self.engine.agenerate(messages, params)
        except EngineInputError:
            raise
        except Exception as e:
            self.failure = f"{type(e).__name__}: {e}"
            logger.error("engine failed on a window: %s", self.failure)
            raise EngineFailure(self.failure) from None
        self.failure = None
        return generations

    async def alive(self) -> bool:
        """True unless the engine failed since it last answered; then it must answer a one-token probe."""
        if self.failure is None:
            return True
        try:
            await asyncio.wait_for(self.engine.agenerate(_PROBE, SamplingParams(max_new_tokens=1)),
                                   self.probe_timeout_s)
        except Exception as e:
            self.failure = f"{type(e).__name__}: {e}"
            return False
        logger.info("engine answered a probe after failing (%s); replica stays", self.failure)
        self.failure = None
        return True

    @property
    def tokenizer(self) -> Any | None:
        return self.engine.tokenizer

    def windows_in_flight(self) -> int:
        return self.engine.windows_in_flight()

    async def release_loop(self) -> None:
        await self.engine.release_loop()

    def close(self) -> None:
        self.engine.close()

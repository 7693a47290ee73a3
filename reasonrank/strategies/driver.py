"""The one strategy driver: every query's strategy advances the moment its own window returns.

A strategy is a generator over one query (see `base`): it yields the window it needs next, or a round of
windows that run at once, and receives the engine's generations for them. `drive` runs one query's
strategy to its ranking, awaiting each round (each window reasoning as the strategy's `reasoning` says);
`drive_requests` drives many queries at once, so the engine always holds the ready windows of every
unfinished query (up to a bound, `EngineWindows`) and batches them continuously. No query waits for
another's window:

    query A:  A1 ───▶ A2 ─▶ A3 ────▶ done
    query B:  B1 ─▶ B2 ───────▶ done           (each arrow: the window's own generation time)
    query C:  C1 ───────▶ C2 ─▶ done
    engine :  continuous batch of whatever is in flight

The evaluate job, the serving replica and the in-process API all rank through here (`reasonrank.Reranker`);
`rank_requests` is the same for code that holds an engine and a strategy. A greedy ranking does not depend
on how many queries run beside it (each window's seed, when sampling is seeded, comes from the window's own
prompt, not from its position in a batch).
"""
from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import replace

from reasonrank.engines.base import Engine, Generation, SamplingParams, run_sync
from reasonrank.prompt import PassageTruncator
from reasonrank.strategies.base import EngineCall, RankingStrategy
from reasonrank.strategies.engine_windows import EngineWindows
from reasonrank.strategies.reasoning import WindowFn, reasoned
from reasonrank.types import RankedList, RerankRequest

QueryDone = Callable[[RankedList], None]


async def drive(strategy: RankingStrategy, request: RerankRequest, truncate: PassageTruncator,
                window: WindowFn) -> RankedList:
    """Run `strategy` over `request`, awaiting each window (or round of windows) it asks for from `window`,
    within the strategy's reasoning mode and budget. Each generation's `round` is the sequential round it
    belongs to (0 first)."""
    window = reasoned(window, strategy.reasoning)
    steps = strategy.steps(request, truncate)
    number = 0
    try:
        asked = next(steps)
        while True:
            asked = steps.send(await _round(asked, window, number))
            number += 1
    except StopIteration as stop:
        return stop.value


async def _round(asked: EngineCall | list[EngineCall], window: WindowFn,
                 number: int) -> Generation | list[Generation]:
    """One round's generations, stamped with its number: one window, or several at once (if one fails, the
    others are cancelled, so no orphan keeps the engine busy)."""
    calls = [asked] if isinstance(asked, EngineCall) else asked
    tasks = [asyncio.ensure_future(window(call)) for call in calls]
    try:
        generations = await asyncio.gather(*tasks)
    except BaseException:
        for task in tasks:
            task.cancel()
        raise
    stamped = [replace(gen, round=number) for gen in generations]
    return stamped[0] if isinstance(asked, EngineCall) else stamped


async def drive_requests(strategy: RankingStrategy, requests: list[RerankRequest], truncate: PassageTruncator,
                         window: WindowFn, on_query_done: QueryDone | None = None) -> list[RankedList]:
    """Every request driven at once, each advancing on its own; results in request order. `on_query_done`
    is called with each ranking as it finishes (progress, resumable parts)."""
    async def one(request: RerankRequest) -> RankedList:
        ranked = await drive(strategy, request, truncate, window)
        if on_query_done is not None:
            on_query_done(ranked)
        return ranked

    return list(await asyncio.gather(*(one(request) for request in requests)))


def rank_requests(engine: Engine, strategy: RankingStrategy, requests: list[RerankRequest],
                  params: SamplingParams, truncate: PassageTruncator | None = None,
                  max_windows_in_flight: int = 64, on_query_done: QueryDone | None = None) -> list[RankedList]:
    """Every request ranked by `strategy` on `engine` (`drive_requests`), for synchronous callers."""
    window = EngineWindows(engine, params, max_windows_in_flight)
    truncate = truncate or PassageTruncator(engine.tokenizer, None)
    return run_sync(drive_requests(strategy, requests, truncate, window, on_query_done))

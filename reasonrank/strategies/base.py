"""What a ranking strategy is, and how many queries' strategies share one engine.

A strategy is a generator over one query: it yields an `EngineCall` (the messages for its current window),
receives the engine's `Generation` for it, and finally returns the reranked list. Because a strategy never
calls the engine itself, `rerank` can advance the strategies of many queries in lockstep and send the
current windows of all of them to the engine in ONE call: a query's windows stay sequential, queries do not.

    query A:  win A1 ──▶ win A2 ──▶ win A3 ──▶ done
    query B:  win B1 ──▶ done
    engine :  [A1,B1]    [A2]       [A3]          (one generate() per round)

Adding a strategy is adding a subclass; nothing else changes.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import ClassVar

from reasonrank.engines.base import Engine, Generation, Messages, SamplingParams
from reasonrank.prompt import PassageTruncator
from reasonrank.types import RankedList, RerankRequest, WindowLog


@dataclass(frozen=True)
class EngineCall:
    messages: Messages
    start: int  # the window's span in the current list, for the per-window log
    end: int


Steps = Generator[EngineCall, Generation, RankedList]


class RankingStrategy(ABC):
    name: ClassVar[str]

    @abstractmethod
    def steps(self, request: RerankRequest, truncate: PassageTruncator) -> Steps:
        """Yield engine calls for `request`, receive their generations, return the reranked list."""

    @staticmethod
    def window_log(request: RerankRequest, strategy: str, call: EngineCall, gen: Generation,
                   well_formed: bool) -> WindowLog:
        return WindowLog(
            qid=request.query.qid, strategy=strategy, start=call.start, end=call.end,
            prompt_tokens=gen.prompt_tokens, completion_tokens=gen.completion_tokens,
            latency_s=gen.latency_s, well_formed=well_formed, finish_reason=gen.finish_reason,
            response=gen.text,
        )


def rerank(engine: Engine, strategy: RankingStrategy, requests: list[RerankRequest],
           params: SamplingParams, truncate: PassageTruncator | None = None,
           on_round: Callable[[int, int], None] | None = None) -> list[RankedList]:
    """Rerank every request, batching the current window of all unfinished queries into one engine call.

    `on_round(windows_in_round, queries_done)` is called after each engine call (progress reporting).
    """
    if params.n != 1:
        raise ValueError("reranking takes one sample per window (SamplingParams.n must be 1)")
    truncate = truncate or PassageTruncator(engine.tokenizer, None)
    results: list[RankedList | None] = [None] * len(requests)
    pending: dict[int, tuple[Steps, EngineCall]] = {}
    for i, req in enumerate(requests):
        gen = strategy.steps(req, truncate)
        _advance(i, gen, None, pending, results)
    while pending:
        order = list(pending)
        outputs = engine.generate([pending[i][1].messages for i in order], params)
        for i, out in zip(order, outputs, strict=True):
            gen, _ = pending.pop(i)
            _advance(i, gen, out, pending, results)
        if on_round:
            on_round(len(order), sum(r is not None for r in results))
    return [r for r in results if r is not None]


def _advance(i: int, gen: Steps, value: Generation | None, pending: dict, results: list) -> None:
    try:
        call = gen.send(value) if value is not None else next(gen)
        pending[i] = (gen, call)
    except StopIteration as stop:
        results[i] = stop.value

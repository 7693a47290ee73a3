"""Rerank one request's documents by driving its strategy, window by window, through a shared batcher.

`reasonrank.strategies.rerank` batches the windows of queries it is handed together; a server is handed
its queries one HTTP request at a time. So each request drives its own strategy generator here and awaits
each window from `generate_window`, a coroutine the replica backs with a batcher that gathers the windows
of all requests in flight into one engine call. A request's windows stay sequential; requests never wait
for each other's remaining windows.
"""
from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from reasonrank.engines.base import Generation
from reasonrank.parsing import extract_answer
from reasonrank.prompt import PassageTruncator
from reasonrank.strategies import EngineCall, RankingStrategy
from reasonrank.types import Candidate, Query, RankedList, RerankRequest

_THINK = re.compile(r"<think>(?P<reasoning>.*?)(?:</think>|$)", re.DOTALL)


@dataclass(frozen=True)
class BatchedGeneration:
    generation: Generation
    batch_size: int  # windows in the engine call this one rode in


WindowGenerator = Callable[[EngineCall], Awaitable[BatchedGeneration]]


@dataclass(frozen=True)
class ServedWindow:
    call: EngineCall
    generation: Generation
    well_formed: bool
    batch_size: int

    @property
    def reasoning(self) -> str | None:
        """The model's reasoning: what the server returned apart from the answer, else the `<think>` text."""
        if self.generation.reasoning is not None:
            return self.generation.reasoning
        found = _THINK.search(self.generation.text)
        return found.group("reasoning") if found else None

    @property
    def answer(self) -> str | None:
        return extract_answer(self.generation.text)


@dataclass(frozen=True)
class DocumentRanking:
    order: list[int]  # indices into the request's documents, best first; always a permutation
    windows: list[ServedWindow]

    @property
    def prompt_tokens(self) -> int:
        return sum(w.generation.prompt_tokens for w in self.windows)

    @property
    def completion_tokens(self) -> int:
        return sum(w.generation.completion_tokens for w in self.windows)

    @property
    def malformed_windows(self) -> int:
        return sum(not w.well_formed for w in self.windows)


def relevance_score(rank: int) -> float:
    """Score of the document at 0-based `rank`: 1/(1+rank), so 1.0 for the best, strictly decreasing, > 0."""
    return 1.0 / (1 + rank)


async def rank_documents(query: str, texts: list[str], strategy: RankingStrategy, truncate: PassageTruncator,
                         generate_window: WindowGenerator, qid: str = "") -> DocumentRanking:
    """Rank `texts` for `query`; each window the strategy asks for is awaited from `generate_window`."""
    request = RerankRequest.of(Query(qid, query), [Candidate(str(i), text) for i, text in enumerate(texts)])
    steps = strategy.steps(request, truncate)
    calls: list[EngineCall] = []
    outputs: list[BatchedGeneration] = []
    try:
        call = next(steps)
        while True:
            output = await generate_window(call)
            calls.append(call)
            outputs.append(output)
            call = steps.send(output.generation)
    except StopIteration as stop:
        ranked: RankedList = stop.value
    windows = [ServedWindow(call, out.generation, log.well_formed, out.batch_size)
               for call, out, log in zip(calls, outputs, ranked.windows, strict=True)]
    return DocumentRanking([int(docid) for docid in ranked.docids], windows)

"""One HTTP request's ranking: its documents become a query's candidates, and the one strategy driver
(`reasonrank.strategies.driver.drive`) runs the strategy over them, awaiting each window from the
replica's engine. The engine batches the windows of every request in flight continuously, so a request
waits for its own windows only.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from reasonrank.prompt import PassageTruncator
from reasonrank.strategies import RankingStrategy, drive
from reasonrank.strategies.driver import WindowFn
from reasonrank.types import Candidate, Query, RerankRequest, WindowLog

_THINK = re.compile(r"<think>(?P<reasoning>.*?)(?:</think>|$)", re.DOTALL)


@dataclass(frozen=True)
class DocumentRanking:
    order: list[int]  # indices into the request's documents, best first; always a permutation
    windows: list[WindowLog]

    @property
    def prompt_tokens(self) -> int:
        return sum(w.prompt_tokens for w in self.windows)

    @property
    def completion_tokens(self) -> int:
        return sum(w.completion_tokens for w in self.windows)

    @property
    def malformed_windows(self) -> int:
        return sum(not w.well_formed for w in self.windows)


def relevance_score(rank: int) -> float:
    """Score of the document at 0-based `rank`: 1/(1+rank), so 1.0 for the best, strictly decreasing, > 0."""
    return 1.0 / (1 + rank)


def window_reasoning(response: str) -> str | None:
    """The reasoning in a window's response (every backend returns it inside `<think>`), even when cut off."""
    found = _THINK.search(response)
    return found.group("reasoning") if found else None


async def rank_documents(query: str, texts: list[str], strategy: RankingStrategy, truncate: PassageTruncator,
                         window: WindowFn, qid: str = "") -> DocumentRanking:
    """Rank `texts` for `query`; each window the strategy asks for is awaited from `window`."""
    request = RerankRequest.of(Query(qid, query), [Candidate(str(i), text) for i, text in enumerate(texts)])
    ranked = await drive(strategy, request, truncate, window)
    return DocumentRanking([int(docid) for docid in ranked.docids], ranked.windows)

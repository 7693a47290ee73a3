"""One-shot full-list ranking (R1-Ranker's DRanker): the whole top-k in a single window."""
from __future__ import annotations

from typing import ClassVar, Literal

from reasonrank.strategies.base import RankingStrategy, Steps, StrategyParams
from reasonrank.strategies.sliding_window import SlidingWindow
from reasonrank.prompt import PassageTruncator
from reasonrank.types import RerankRequest


class OneShot(RankingStrategy):
    name = "one_shot"

    def __init__(self, depth: int | None = 20):
        self.depth = depth

    def steps(self, request: RerankRequest, truncate: PassageTruncator) -> Steps:
        n = len(request.candidates) if self.depth is None else min(self.depth, len(request.candidates))
        whole = SlidingWindow(window_size=max(n, 1), step=max(n, 1), depth=n)
        whole.name = self.name
        return (yield from whole.steps(request, truncate))


class OneShotConfig(StrategyParams):
    """The whole top-k is one window: no window_size of its own."""

    implementation: ClassVar = OneShot
    name: Literal[OneShot.name] = OneShot.name

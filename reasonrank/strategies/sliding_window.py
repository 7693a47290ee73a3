"""The paper's sliding window: windows of 20, step 10, from the bottom of the top-k to the top."""
from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field, model_validator

from reasonrank.config import PromptConfig
from reasonrank.parsing import parse_ranking
from reasonrank.prompt import PassageTruncator
from reasonrank.strategies.base import EngineCall, RankingStrategy, Steps, StrategyParams
from reasonrank.tasks.families import family_of
from reasonrank.types import RankedList, RerankRequest


def window_spans(n: int, window_size: int, step: int) -> list[tuple[int, int]]:
    """(start, end) spans, bottom first, the last one always starting at 0; any n.

    For n=100, size 20, step 10: (80,100), (70,90), …, (0,20) — the paper's 9 windows.
    """
    if window_size < 1 or step < 1:
        raise ValueError("window_size and step must be >= 1")
    if n == 0:
        return []
    spans = []
    end = n
    while True:
        start = max(end - window_size, 0)
        spans.append((start, end))
        if start == 0:
            return spans
        end -= step


class SlidingWindow(RankingStrategy):
    name = "sliding_window"

    def __init__(self, window_size: int = 20, step: int = 10, depth: int | None = 100):
        self.window_size, self.step, self.depth = window_size, step, depth

    def steps(self, request: RerankRequest, truncate: PassageTruncator) -> Steps:
        ranked = list(request.candidates)
        depth = len(ranked) if self.depth is None else min(self.depth, len(ranked))
        family = family_of(request.query.domain)  # passages' listwise prompt, or a Ranking-bench task's own
        logs = []
        for start, end in window_spans(depth, self.window_size, self.step):
            window = ranked[start:end]
            call = EngineCall(family.list_messages(request.query.text, [c.text for c in window], truncate),
                              start, end)
            gen = yield call
            parsed = parse_ranking(gen.text, len(window))
            ranked[start:end] = [window[i] for i in parsed.order]
            logs.append(self.window_log(request, self.name, call, gen, parsed.well_formed,
                                        [c.docid for c in ranked[start:end]]))
        return RankedList(request.query.qid, ranked, logs)


class SlidingWindowConfig(StrategyParams, PromptConfig):
    implementation: ClassVar = SlidingWindow
    name: Literal[SlidingWindow.name] = SlidingWindow.name
    step: int = Field(10, ge=1)

    @model_validator(mode="after")
    def _step_within_window(self) -> SlidingWindowConfig:
        if self.step > self.window_size:
            raise ValueError(f"step ({self.step}) must not exceed window_size ({self.window_size}): "
                             "passages between windows would never be ranked")
        return self

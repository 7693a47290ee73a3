"""Iterative elimination (R1-Ranker's IRanker; Feng et al., 2025): each step the model names the least
relevant of the remaining candidates, which is removed, until `stop_at` remain (1: one is left).

The final ranking is the reverse elimination order under the remaining ones (kept in their current
order), then the untouched tail below `depth`: always a permutation. A query takes depth - stop_at engine
calls, one per round, so the driver batches step i of every query into one call. The remaining candidates
always end up on top, so each step is logged as the span (0, m) of the final list. The prompt is the query's
family's (`reasonrank.tasks.families`: passages, or a Ranking-bench task's items or models).
"""
from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from reasonrank.elimination import parse_elimination
from reasonrank.prompt import PassageTruncator
from reasonrank.strategies.base import EngineCall, RankingStrategy, Steps, StrategyParams
from reasonrank.tasks.families import family_of
from reasonrank.types import RankedList, RerankRequest


class IterativeElimination(RankingStrategy):
    name = "iterative_elimination"
    ranks_windows = False  # a step names the least relevant passage, it does not rank the window

    def __init__(self, depth: int | None = 20, stop_at: int = 1):
        if stop_at < 1:
            raise ValueError(f"stop_at must be >= 1, got {stop_at}")
        self.depth, self.stop_at = depth, stop_at

    def steps(self, request: RerankRequest, truncate: PassageTruncator) -> Steps:
        depth = len(request.candidates) if self.depth is None else min(self.depth, len(request.candidates))
        remaining = list(request.candidates[:depth])
        texts = [truncate(c.text) for c in remaining]  # cut once, not once per step
        family = family_of(request.query.domain)  # Ranking-bench's items and models are not passages
        eliminated, logs = [], []
        while len(remaining) > self.stop_at:
            call = EngineCall(family.elimination_messages(request.query.text, texts), 0, len(remaining))
            gen = yield call
            parsed = parse_elimination(gen.text, len(remaining))
            eliminated.append(remaining.pop(parsed.index))
            texts.pop(parsed.index)
            logs.append(self.window_log(request, self.name, call, gen, parsed.well_formed))
        ranked = remaining + eliminated[::-1] + list(request.candidates[depth:])
        return RankedList(request.query.qid, ranked, logs)


class IterativeEliminationConfig(StrategyParams):
    """Each step shows every remaining candidate: no window_size of its own."""

    implementation: ClassVar = IterativeElimination
    name: Literal[IterativeElimination.name] = IterativeElimination.name
    stop_at: int = Field(1, ge=1)  # stop when this many remain, keeping their order

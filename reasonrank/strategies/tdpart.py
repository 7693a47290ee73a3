"""Top-down partitioning (Parry, MacAvaney & Ganguly, 2024, "TDPart"): the top of a list in three rounds.

    round 1: rank the top window; the passage it places at `cutoff` is the pivot
    round 2: every other passage against the pivot, all at once: the rest of the list cut into chunks of
             window_size - 1 passages, each shown after the pivot (first, as in the paper); what a window ranks
             above the pivot is a candidate, what it ranks below stays below
    round 3: rank the candidates (the top window's above the pivot, then the others) in one window; only
             when some passage beat the pivot

Every window holds exactly window_size passages whenever the list has that many: a model fine-tuned on one
window size may not answer well on others (the demo model answers 10 of 12 windows of 10, none of 9). So the
last, short partition window is topped up with the passages just above its chunk (the top window's
included), and the candidates' window with the pivot and the passages below it; these fillers are shown,
but their place in that window is ignored (their verdict comes from their own window, or they are known to
lie below the pivot).

The list is: the candidates (ranked), the pivot, then everything below it in the order its window left it,
then the first stage's tail beyond `depth`. Candidates beyond one window (rare: more than window_size -
cutoff passages beat the pivot) follow the ranked ones unranked, as in the paper's single pass (buffer =
window). For top-100 and windows of 20: 1 + 5 + 1 = 7 calls in 3 sequential rounds, against the sliding window's 9 in 9.
A partition window is logged with the span of the passages it compares with the pivot.
"""
from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field, model_validator

from reasonrank.config import PromptConfig
from reasonrank.prompt import PassageTruncator
from reasonrank.strategies.base import RankingStrategy, Steps, StrategyParams
from reasonrank.strategies.rounds import rank_round
from reasonrank.types import RankedList, RerankRequest


class TopDownPartition(RankingStrategy):
    name = "tdpart"

    def __init__(self, window_size: int = 20, depth: int | None = 100, cutoff: int | None = None):
        cutoff = window_size // 2 if cutoff is None else cutoff
        if not 1 <= cutoff < window_size:
            raise ValueError(f"cutoff must be in [1, window_size): got {cutoff} with window_size {window_size}")
        self.window_size, self.depth, self.cutoff = window_size, depth, cutoff

    def steps(self, request: RerankRequest, truncate: PassageTruncator) -> Steps:
        n = len(request.candidates) if self.depth is None else min(self.depth, len(request.candidates))
        pool, tail = list(request.candidates[:n]), list(request.candidates[n:])
        size, logs = self.window_size, []
        (order,) = yield from rank_round(self, request, truncate, [pool[:size]], [(0, min(size, n))], logs)
        top, rest = [pool[i] for i in order], pool[size:]
        if not rest:
            return RankedList(request.query.qid, top + tail, logs)
        pivot = top[self.cutoff]
        above, below = top[:self.cutoff], top[self.cutoff + 1:]
        chunk = size - 1
        spans = [(start, min(start + chunk, len(rest))) for start in range(0, len(rest), chunk)]
        fills = [(above + below + rest[:start])[end - start - chunk:] if end - start < chunk else []
                 for start, end in spans]  # a short chunk is topped up with the passages just above it
        windows = [[pivot, *fill, *rest[start:end]] for fill, (start, end) in zip(fills, spans)]
        orders = yield from rank_round(self, request, truncate, windows,
                                       [(size + start, size + end) for start, end in spans], logs)
        for window, fill, order in zip(windows, fills, orders):
            at, new = order.index(0), 1 + len(fill)  # the pivot's place; where the chunk's own passages begin
            above += [window[i] for i in order[:at] if i >= new]
            below += [window[i] for i in order[at + 1:] if i >= new]
        if len(above) > self.cutoff:  # something beat the pivot: rank the candidates once more
            head = above[:size]
            fill = ([pivot] + below)[:size - len(head)]
            (order,) = yield from rank_round(self, request, truncate, [head + fill],
                                             [(0, len(head) + len(fill))], logs)
            above = [head[i] for i in order if i < len(head)] + above[size:]
        return RankedList(request.query.qid, above + [pivot] + below + tail, logs)


class TopDownPartitionConfig(StrategyParams, PromptConfig):
    implementation: ClassVar = TopDownPartition
    name: Literal[TopDownPartition.name] = TopDownPartition.name
    cutoff: int | None = Field(None, ge=1)  # the pivot's 0-based rank in the top window (None: half)

    @model_validator(mode="after")
    def _cutoff_within_window(self) -> TopDownPartitionConfig:
        if self.cutoff is not None and self.cutoff >= self.window_size:
            raise ValueError(f"cutoff ({self.cutoff}) must be below window_size ({self.window_size}): the pivot "
                             "is the passage at that rank of the top window")
        return self

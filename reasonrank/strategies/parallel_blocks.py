"""Parallel overlapping blocks, aggregated (after JointRank, Dedov, ICTIR 2025): the whole list in one round.

The top `depth` passages are cut into blocks of at most window_size twice: once in first-stage order
(neighbours together) and once striding through the list (block k takes every b-th passage from k), so
each passage meets two different sets of rivals and any two blocks of different cuts share about the same
number of passages. All blocks are ranked at once; the ranking is each passage's share of the pairwise
comparisons it won across its blocks (a passage at place p of a block of m wins m-1-p of m-1), ties in
first-stage order. One sequential round; with `rerank_top` the aggregated top window is ranked once more
(two rounds). A block is logged with the span from its first to its last passage in first-stage order.
"""
from __future__ import annotations

from typing import ClassVar, Literal

from reasonrank.config import PromptConfig
from reasonrank.prompt import PassageTruncator
from reasonrank.strategies.base import RankingStrategy, Steps, StrategyParams
from reasonrank.strategies.rounds import even_chunks, rank_round
from reasonrank.types import RankedList, RerankRequest


def block_design(n: int, window_size: int) -> list[list[int]]:
    """Blocks of indices into range(n), each at most window_size, every index in two (one if n fits one)."""
    if n <= window_size:
        return [list(range(n))] if n else []
    count = -(-n // window_size)
    contiguous = [list(range(start, end)) for start, end in even_chunks(n, window_size)]
    striding = [list(range(k, n, count)) for k in range(count)]
    return contiguous + striding


class ParallelBlocks(RankingStrategy):
    name = "parallel_blocks"

    def __init__(self, window_size: int = 20, depth: int | None = 100, rerank_top: bool = False):
        if window_size < 2:
            raise ValueError(f"window_size must be >= 2 for blocks to compare passages, got {window_size}")
        self.window_size, self.depth, self.rerank_top = window_size, depth, rerank_top

    def steps(self, request: RerankRequest, truncate: PassageTruncator) -> Steps:
        n = len(request.candidates) if self.depth is None else min(self.depth, len(request.candidates))
        pool, tail = list(request.candidates[:n]), list(request.candidates[n:])
        blocks = block_design(n, self.window_size)
        logs = []
        orders = yield from rank_round(self, request, truncate, [[pool[i] for i in block] for block in blocks],
                                       [(block[0], block[-1] + 1) for block in blocks], logs)
        wins, games = [0] * n, [0] * n
        for block, order in zip(blocks, orders):
            for place, i in enumerate(order):
                wins[block[i]] += len(block) - 1 - place
                games[block[i]] += len(block) - 1
        ranked = [pool[i] for i in sorted(range(n), key=lambda i: (-wins[i] / max(games[i], 1), i))]
        if self.rerank_top and len(blocks) > 1:
            top = ranked[:self.window_size]
            (order,) = yield from rank_round(self, request, truncate, [top], [(0, len(top))], logs)
            ranked[:len(top)] = [top[i] for i in order]
        return RankedList(request.query.qid, ranked + tail, logs)


class ParallelBlocksConfig(StrategyParams, PromptConfig):
    implementation: ClassVar = ParallelBlocks
    name: Literal[ParallelBlocks.name] = ParallelBlocks.name
    rerank_top: bool = False  # rank the aggregated top window once more (one more round)

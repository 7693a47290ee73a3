"""Ranking strategies. Each lives in its own module and registers itself by `name`."""
from reasonrank.strategies.base import EngineCall, RankingStrategy
from reasonrank.strategies.driver import drive, drive_requests, rank_requests
from reasonrank.strategies.engine_windows import EngineWindows
from reasonrank.strategies.iterative_elimination import IterativeElimination
from reasonrank.strategies.one_shot import OneShot
from reasonrank.strategies.parallel_blocks import ParallelBlocks
from reasonrank.strategies.sliding_window import SlidingWindow, window_spans
from reasonrank.strategies.tdpart import TopDownPartition

STRATEGIES: dict[str, type[RankingStrategy]] = {
    s.name: s for s in (SlidingWindow, OneShot, IterativeElimination, TopDownPartition, ParallelBlocks)}


def build_strategy(name: str, **options) -> RankingStrategy:
    try:
        cls = STRATEGIES[name]
    except KeyError:
        raise ValueError(f"unknown strategy {name!r}; known: {sorted(STRATEGIES)}") from None
    return cls(**options)


__all__ = ["EngineCall", "RankingStrategy", "drive", "drive_requests", "rank_requests", "EngineWindows", "OneShot", "SlidingWindow",
           "IterativeElimination", "TopDownPartition", "ParallelBlocks", "window_spans", "STRATEGIES",
           "build_strategy"]

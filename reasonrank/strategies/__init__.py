"""Ranking strategies. Each lives in its own module beside its config; `CONFIGS` is the registry.

`StrategyConfig` is the `strategy:` piece of a config: `name` picks a strategy's config model (sliding_window
when left out), which declares exactly the keys that strategy reads and builds it (`.build()`).
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from reasonrank.config import OneOf
from reasonrank.strategies.base import EngineCall, RankingStrategy, StrategyParams
from reasonrank.strategies.driver import drive, drive_requests, rank_requests
from reasonrank.strategies.engine_windows import EngineWindows
from reasonrank.strategies.iterative_elimination import IterativeElimination, IterativeEliminationConfig
from reasonrank.strategies.one_shot import OneShot, OneShotConfig
from reasonrank.strategies.parallel_blocks import ParallelBlocks, ParallelBlocksConfig
from reasonrank.strategies.sliding_window import SlidingWindow, SlidingWindowConfig, window_spans
from reasonrank.strategies.tdpart import TopDownPartition, TopDownPartitionConfig

CONFIGS: tuple[type[StrategyParams], ...] = (SlidingWindowConfig, OneShotConfig, IterativeEliminationConfig,
                                             TopDownPartitionConfig, ParallelBlocksConfig)
STRATEGIES: dict[str, type[RankingStrategy]] = {c.implementation.name: c.implementation for c in CONFIGS}


class StrategyConfig(OneOf):
    """A strategy and the keys it reads, named by `name`."""

    key, default = "name", SlidingWindow.name
    members = CONFIGS


def build_strategy(name: str, **options) -> RankingStrategy:
    try:
        cls = STRATEGIES[name]
    except KeyError:
        raise ValueError(f"unknown strategy {name!r}; known: {sorted(STRATEGIES)}") from None
    return cls(**options)


def overridden(base: StrategyParams, keys: Mapping[str, Any]) -> dict[str, Any]:
    """`base`'s keys with `keys` set, to validate as one config. Where `keys` name another strategy, the keys of
    `base` that strategy reads carry over, its defaults fill the rest, and the others are dropped."""
    name = keys.get("name", base.name)
    chosen = StrategyConfig.by_tag().get(name)
    defaults = chosen().model_dump() if chosen is not None else {}  # an unknown name: validation names it
    return {**defaults, **StrategyConfig.switched(base.model_dump(), name, keep=keys), **keys}


__all__ = ["EngineCall", "RankingStrategy", "StrategyParams", "StrategyConfig", "CONFIGS", "drive", "drive_requests",
           "rank_requests", "EngineWindows", "OneShot", "SlidingWindow", "IterativeElimination", "TopDownPartition",
           "ParallelBlocks", "SlidingWindowConfig", "OneShotConfig", "IterativeEliminationConfig",
           "TopDownPartitionConfig", "ParallelBlocksConfig", "window_spans", "STRATEGIES", "build_strategy",
           "overridden"]

"""What a ranking strategy is.

A strategy is a generator over one query: it yields an `EngineCall` (the messages for its current window),
receives the engine's `Generation` for it, and finally returns the reranked list. A strategy whose windows do
not depend on each other yields them as one list (a round), runs them at once and receives their
generations as a list in the same order. Because a strategy never calls the engine itself, one driver
(`reasonrank.strategies.driver`) runs every strategy for every consumer, many queries at once, each
advancing the moment its own windows return; the driver numbers the rounds, so each window's log says
which sequential round it ran in.

Every strategy carries its reasoning mode and budget (`reasoning`, from its config), which the driver applies
to each of its windows (`reasonrank.strategies.reasoning`).

Each strategy's module declares, beside the strategy, its config: a `StrategyParams` holding exactly the keys
that strategy reads. Adding a strategy is adding a subclass and its config, and listing the config in the
registry (`reasonrank.strategies`).
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Generator
from dataclasses import dataclass
from typing import Any, ClassVar

from pydantic import Field

from reasonrank.config import PassageBudget, ReasoningConfig, model_prompt
from reasonrank.engines.base import Generation, Messages
from reasonrank.prompt import PassageTruncator
from reasonrank.types import RankedList, RerankRequest, WindowLog


@dataclass(frozen=True)
class EngineCall:
    messages: Messages
    start: int  # the window's span in the current list, for the per-window log
    end: int
    max_new_tokens: int | None = None  # this window's token limit (reasoning budgets); None: the sampling's


Steps = Generator[EngineCall | list[EngineCall], Generation | list[Generation], RankedList]


class RankingStrategy(ABC):
    name: ClassVar[str]
    ranks_windows: ClassVar[bool] = True  # each step ranks its whole window: what score "votes" counts
    reasoning: ReasoningConfig = ReasoningConfig()  # as trained, unless its config says otherwise

    @abstractmethod
    def steps(self, request: RerankRequest, truncate: PassageTruncator) -> Steps:
        """Yield engine calls for `request`, receive their generations, return the reranked list."""

    @staticmethod
    def window_log(request: RerankRequest, strategy: str, call: EngineCall, gen: Generation,
                   well_formed: bool, ranked: list[str] | None = None) -> WindowLog:
        return WindowLog(
            qid=request.query.qid, strategy=strategy, start=call.start, end=call.end,
            prompt_tokens=gen.prompt_tokens, completion_tokens=gen.completion_tokens,
            latency_s=gen.latency_s, well_formed=well_formed, finish_reason=gen.finish_reason,
            response=gen.text, in_flight=gen.in_flight, round=gen.round,
            forced_answer=gen.forced_answer, ranked=ranked,
        )


class StrategyParams(PassageBudget):
    """What every strategy reads: its name, the top-k it reranks (`depth`), how many tokens each passage keeps
    and how much each window may reason. A strategy's own config adds the keys it reads besides, and names
    the strategy it builds (`implementation`, whose constructor takes those keys)."""

    name: str
    depth: int | None = Field(100, ge=1)  # rerank the top-k of the first stage
    reasoning: ReasoningConfig = ReasoningConfig()

    implementation: ClassVar[type[RankingStrategy]]
    NOT_FOR_THE_STRATEGY: ClassVar[frozenset[str]] = frozenset({"name", "passage_max_tokens", "reasoning"})

    def build(self) -> RankingStrategy:
        """The strategy this config names, reasoning as `reasoning` says."""
        strategy = self.implementation(**{key: getattr(self, key) for key in type(self).model_fields
                                          if key not in self.NOT_FOR_THE_STRATEGY})
        strategy.reasoning = self.reasoning
        return strategy

    def for_model(self, model: str, log: Any) -> StrategyParams:
        """This strategy with the prompt settings `model` was trained with (those this strategy reads), where
        this config does not set them itself; each setting the config overrides, and differs from the model's,
        is logged."""
        trained = model_prompt(model)
        if trained is None:
            return self
        update = {}
        for key, value in trained.model_dump().items():
            if key not in type(self).model_fields:
                continue
            if key not in self.model_fields_set:
                update[key] = value
            elif getattr(self, key) != value:
                log.warning("strategy.%s = %s overrides the %s that %s was trained with", key, getattr(self, key),
                            value, model)
        if update:
            log.info("prompt settings from %s: %s", model, update)
        return self.model_validate({**self.model_dump(exclude_unset=True), **update})

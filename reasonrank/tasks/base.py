"""What a training row asks of the model, and how its answer is judged: the `Task` interface.

A task says, for an RL row (`RLSample`): the prompt a rollout answers (`messages`), how a response is read
(`parse`), its reward with the terms the step log reports (`reward`), and which metric evaluates a model
trained on it (`metric`, `strategy`). Rollout workers and reward actors look the task up by the row's
`task` name (`reasonrank.tasks.task_named`); a new task is one module here and one line in the registry.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Any, ClassVar

from reasonrank.config import Strict
from reasonrank.prompt import PassageTruncator
from reasonrank.task_reward import TaskReward

if TYPE_CHECKING:
    from reasonrank.data.training_sets import RLSample


class Task(ABC):
    name: ClassVar[str]
    weights_model: ClassVar[type[Strict]]  # the reward's configurable values
    metric: ClassVar[str]  # what evaluates a model trained on the task
    strategy: ClassVar[str]  # the ranking strategy (`reasonrank.strategies`) that evaluation runs

    def __init__(self, weights: Strict | dict[str, Any] | None = None):
        self.weights = self.weights_model.model_validate(weights if weights is not None else {})

    @classmethod
    def validate(cls, sample: RLSample) -> None:
        """Raise ValueError when `sample` lacks what this task's prompt or reward needs."""

    @abstractmethod
    def messages(self, sample: RLSample, truncate: PassageTruncator | None = None) -> list[dict[str, str]]:
        """The chat messages a rollout of `sample` answers."""

    @abstractmethod
    def parse(self, response: str, sample: RLSample) -> Any:
        """What `response` answers, in the task's own terms (a ranking, an elimination)."""

    @abstractmethod
    def reward(self, response: str, sample: RLSample) -> TaskReward:
        """The reward of `response` to `sample`'s prompt."""


def the_positive(sample: RLSample) -> str:
    """The one positive of an R1-Ranker row (Ranking-bench's `gt`)."""
    if len(sample.relevant_docids) != 1:
        raise ValueError(f"sample {sample.id}: needs exactly one relevant id (the positive), "
                         f"has {len(sample.relevant_docids)}")
    return sample.relevant_docids[0]

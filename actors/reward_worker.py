"""Reward actors: CPU-only Ray actors scoring rollouts, in batches, each with the reward of its row's task
(`reasonrank.tasks`: ReasonRank's multi-view reward for a listwise window, the step reward for an IRanker
elimination step, the list reward for a DRanker list), so one batch may mix tasks.

Each rollout comes back with its reward, its outcome (well formed or not) and the terms the step log reports
(a window's NDCG@10, Recall@10 and RBO; an elimination's content and format terms; a list's overlap, NDCG and
format terms). The actors hold no
state, so Ray itself restarts one that dies and re-runs the batches it had in flight
(`max_restarts` / `max_task_retries`): the step waits a little longer and completes.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import ray

from actors.sharding import contiguous
from reasonrank.data.training_sets import RLSample
from reasonrank.reward import RewardWeights
from reasonrank.tasks import TASKS, task_named
from reasonrank.tasks.listwise_window import ListwiseWindow


@ray.remote(num_cpus=0.25, max_restarts=-1, max_task_retries=-1)
class RewardWorker:
    def __init__(self, weights: dict[str, dict[str, Any]]):
        """`weights`: task name → its reward weights (a task not named keeps its defaults)."""
        self.tasks = {name: task_named(name, weights.get(name)) for name in TASKS}

    def score(self, items: list[tuple[str, RLSample]]) -> list[dict[str, Any]]:
        """(response, the row it answers) per item → reward breakdowns, each by the row's task."""
        return [self.tasks[sample.task].reward(response, sample).as_dict() for response, sample in items]


class RewardPool:
    """Spreads a step's rollouts over the reward actors in balanced batches; gathers the breakdowns in order."""

    def __init__(self, weights: RewardWeights, replicas: int, num_cpus: float = 0.25):
        """`weights`: the listwise window's multi-view reward; the other tasks keep their defaults."""
        task_weights = {ListwiseWindow.name: weights.model_dump()}
        self.workers = [RewardWorker.options(num_cpus=num_cpus).remote(task_weights) for _ in range(replicas)]

    def score(self, texts: Sequence[str], samples: Sequence[RLSample]) -> list[dict[str, Any]]:
        """The reward breakdown of `texts[i]` answering `samples[i]`, by `samples[i]`'s task."""
        items = list(zip(texts, samples, strict=True))
        refs = [w.score.remote(share) for w, share in zip(self.workers, contiguous(items, len(self.workers))) if share]
        return [b for batch in ray.get(refs) for b in batch]

    def close(self) -> None:
        for w in self.workers:
            ray.kill(w)

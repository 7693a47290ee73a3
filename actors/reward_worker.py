"""Reward actors: CPU-only Ray actors scoring rollouts with ReasonRank's multi-view reward, in batches.

Each rollout comes back with its reward and the per-window metrics the step log reports (NDCG@10,
Recall@10 and RBO of the window's ranking, and whether the response was well formed). The actors hold no
state, so Ray itself restarts one that dies and re-runs the batches it had in flight
(`max_restarts` / `max_task_retries`): the step waits a little longer and completes.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import ray

from actors.sharding import contiguous
from reasonrank.data.training_sets import RLSample
from reasonrank.reward import RewardWeights, reward_breakdown


@ray.remote(num_cpus=0.25, max_restarts=-1, max_task_retries=-1)
class RewardWorker:
    def __init__(self, weights: dict[str, Any]):
        self.weights = RewardWeights.model_validate(weights)

    def score(self, items: list[tuple[str, list[str], list[str], list[str]]]) -> list[dict[str, Any]]:
        """(response, initial docids, relevant docids, teacher ranking) per item → reward breakdowns."""
        return [reward_breakdown(response, initial, relevant, teacher, self.weights).as_dict()
                for response, initial, relevant, teacher in items]


class RewardPool:
    """Spreads a step's rollouts over the reward actors in balanced batches; gathers the breakdowns in order."""

    def __init__(self, weights: RewardWeights, replicas: int, num_cpus: float = 0.25):
        self.workers = [RewardWorker.options(num_cpus=num_cpus).remote(weights.model_dump())
                        for _ in range(replicas)]

    def score(self, texts: Sequence[str], samples: Sequence[RLSample]) -> list[dict[str, Any]]:
        """The reward breakdown of `texts[i]` answering `samples[i]`'s window."""
        items = [(t, s.docids, s.relevant_docids, s.teacher_ranking) for t, s in zip(texts, samples, strict=True)]
        refs = [w.score.remote(share) for w, share in zip(self.workers, contiguous(items, len(self.workers))) if share]
        return [b for batch in ray.get(refs) for b in batch]

    def close(self) -> None:
        for w in self.workers:
            ray.kill(w)

"""ReasonRank's listwise window: rank a window of passages; the multi-view reward (`reasonrank.reward`)."""
from __future__ import annotations

from typing import TYPE_CHECKING

from reasonrank.parsing import ParsedRanking, parse_ranking
from reasonrank.prompt import PassageTruncator, listwise_messages
from reasonrank.reward import RewardWeights, reward_breakdown
from reasonrank.tasks.base import Task, TaskReward

if TYPE_CHECKING:
    from reasonrank.data.training_sets import RLSample


class ListwiseWindow(Task):
    name = "listwise_window"
    weights_model = RewardWeights
    metric = "ndcg@10"
    strategy = "sliding_window"

    @classmethod
    def validate(cls, sample: RLSample) -> None:
        if sorted(sample.teacher_ranking) != sorted(sample.docids):
            raise ValueError(f"sample {sample.id}: teacher_ranking is not a permutation of docids")

    def messages(self, sample: RLSample, truncate: PassageTruncator | None = None) -> list[dict[str, str]]:
        return listwise_messages(sample.query, sample.passages, truncate)

    def parse(self, response: str, sample: RLSample) -> ParsedRanking:
        return parse_ranking(response, len(sample.docids))

    def reward(self, response: str, sample: RLSample) -> TaskReward:
        b = reward_breakdown(response, sample.docids, sample.relevant_docids, sample.teacher_ranking, self.weights)
        return TaskReward(b.reward, b.outcome, {"ndcg": b.ndcg, "recall": b.recall, "rbo": b.rbo})

"""DRanker's one-shot list: rank every candidate in one answer; the list reward (`reasonrank.list_reward`)."""
from __future__ import annotations

from typing import TYPE_CHECKING

from reasonrank.list_reward import ListRewardWeights, list_reward_terms
from reasonrank.parsing import ParsedRanking, parse_ranking
from reasonrank.prompt import PassageTruncator
from reasonrank.tasks.base import Task, TaskReward, the_positive
from reasonrank.tasks.families import family_of

if TYPE_CHECKING:
    from reasonrank.data.training_sets import RLSample


class OneShotList(Task):
    name = "one_shot_list"
    weights_model = ListRewardWeights
    metric = "mrr"
    strategy = "one_shot"

    @classmethod
    def validate(cls, sample: RLSample) -> None:
        the_positive(sample)

    def messages(self, sample: RLSample, truncate: PassageTruncator | None = None) -> list[dict[str, str]]:
        return family_of(sample.domain).list_messages(sample.query, sample.passages, truncate)

    def parse(self, response: str, sample: RLSample) -> ParsedRanking:
        return parse_ranking(response, len(sample.docids))

    def reward(self, response: str, sample: RLSample) -> TaskReward:
        return list_reward_terms(response, sample.docids, the_positive(sample), self.weights)

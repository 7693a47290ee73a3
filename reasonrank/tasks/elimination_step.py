"""IRanker's elimination step: name the least likely of the remaining candidates; the step reward
(`reasonrank.elimination_reward`). Evaluated by iterative elimination, greedy, to the end."""
from __future__ import annotations

from typing import TYPE_CHECKING

from reasonrank.elimination import ParsedElimination, parse_elimination
from reasonrank.elimination_reward import EliminationRewardWeights, elimination_step_terms
from reasonrank.prompt import PassageTruncator
from reasonrank.tasks.base import Task, TaskReward, the_positive
from reasonrank.tasks.families import family_of

if TYPE_CHECKING:
    from reasonrank.data.training_sets import RLSample


class EliminationStep(Task):
    name = "elimination_step"
    weights_model = EliminationRewardWeights
    metric = "mrr"
    strategy = "iterative_elimination"

    @classmethod
    def validate(cls, sample: RLSample) -> None:
        the_positive(sample)
        if len(sample.docids) < 2:
            raise ValueError(f"sample {sample.id}: an elimination step needs at least 2 candidates")

    def messages(self, sample: RLSample, truncate: PassageTruncator | None = None) -> list[dict[str, str]]:
        return family_of(sample.domain).elimination_messages(sample.query, sample.passages, truncate)

    def parse(self, response: str, sample: RLSample) -> ParsedElimination:
        return parse_elimination(response, len(sample.docids))

    def reward(self, response: str, sample: RLSample) -> TaskReward:
        return elimination_step_terms(response, sample.docids, sample.relevant_docids, self.weights)

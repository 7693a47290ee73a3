"""ReasonRank's multi-view ranking reward for GRPO (Liu et al., 2025, "ReasonRank: Empowering Passage
Ranking with Strong Reasoning Ability", the reward of its RL stage).

    no `<think>…</think>` followed by `<answer>…</answer>`            -> -1
    an answer whose ids are not exactly a permutation of 1..n        ->  0
    otherwise  w_ndcg·NDCG@k + w_recall·Recall@k + w_rbo·RBO           (k = 10; weights 1, 0.2, 0.1)

NDCG and Recall use binary relevance against the teacher-mined relevant ids; RBO compares the predicted
docid order with the teacher's listwise order.

`incomplete: completed` (not the paper's) scores an answer that is not exactly a permutation as the parser
completes it, the ranking evaluation and serving use, less `incomplete_penalty`. With the paper's 0, a slip
in an answer's tail costs as much as a wrong head: on the tiny demo model GRPO then learns to judge fewer
passages relevant (a shorter head leaves fewer ids to skip in the tail) and greedy NDCG@10 falls while the
sampled reward rises (docs/measurements-grpo.md).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Literal

from pydantic import Field

from reasonrank.config import Strict
from reasonrank.metrics import ndcg_at_k, rbo_score, recall_at_k
from reasonrank.parsing import has_think_then_answer, parse_ranking

MALFORMED_REWARD = -1.0
NOT_A_PERMUTATION_REWARD = 0.0


class RewardWeights(Strict):
    ndcg: float = 1.0
    recall: float = 0.2
    rbo: float = 0.1
    k: int = Field(10, ge=1)  # cutoff of NDCG and Recall
    incomplete: Literal["zero", "completed"] = "zero"  # an answer that is not a permutation (module docstring)
    incomplete_penalty: float = Field(0.1, ge=0.0)  # incomplete=completed: subtracted from its score


@dataclass(frozen=True)
class RewardBreakdown:
    """The reward and the terms it was made of (zeros where the format rules decided it)."""

    reward: float
    outcome: Literal["malformed", "not_a_permutation", "scored"]  # not_a_permutation is scored too if completed
    ndcg: float = 0.0
    recall: float = 0.0
    rbo: float = 0.0

    def as_dict(self) -> dict[str, float | str]:
        return asdict(self)


def ndcg_term(pred: Sequence[str], relevant_docids: Sequence[str], k: int) -> float:
    """NDCG@k with binary relevance against the teacher-mined relevant ids (ReasonRank's single-turn view)."""
    return ndcg_at_k(pred, dict.fromkeys(relevant_docids, 1), k)


def recall_term(pred: Sequence[str], relevant_docids: Sequence[str], k: int) -> float:
    """Recall@k against the teacher-mined relevant ids (ReasonRank's multi-turn view): with window 20 and
    step 10 only a window's top 10 move on to the next window, so getting relevant passages there counts."""
    return recall_at_k(pred, dict.fromkeys(relevant_docids, 1), k)


def rbo_term(pred: Sequence[str], teacher_ranking: Sequence[str]) -> float:
    """RBO of the predicted order against the teacher's full listwise order (ReasonRank's list view: the
    whole order counts, not only where the relevant ids land); `rbo` package, p = 1.0."""
    return rbo_score(pred, teacher_ranking)


def reward_breakdown(response: str, initial_list: Sequence[str], relevant_docids: Sequence[str],
                     teacher_ranking: Sequence[str], weights: RewardWeights = RewardWeights()) -> RewardBreakdown:
    """The multi-view reward of one `response` over the window `initial_list` (docids as shown, [1] first)."""
    if not has_think_then_answer(response):
        return RewardBreakdown(MALFORMED_REWARD, "malformed")
    parsed = parse_ranking(response, len(initial_list))
    if not parsed.well_formed and weights.incomplete == "zero":
        return RewardBreakdown(NOT_A_PERMUTATION_REWARD, "not_a_permutation")
    pred = [initial_list[i] for i in parsed.order]
    ndcg = ndcg_term(pred, relevant_docids, weights.k)
    recall = recall_term(pred, relevant_docids, weights.k)
    rbo = rbo_term(pred, teacher_ranking)
    total = weights.ndcg * ndcg + weights.recall * recall + weights.rbo * rbo
    if not parsed.well_formed:
        return RewardBreakdown(total - weights.incomplete_penalty, "not_a_permutation", ndcg, recall, rbo)
    return RewardBreakdown(total, "scored", ndcg, recall, rbo)


def multi_view_reward(response: str, initial_list: Sequence[str], relevant_docids: Sequence[str],
                      teacher_ranking: Sequence[str], weights: RewardWeights = RewardWeights()) -> float:
    """The scalar reward GRPO optimises (see the module docstring)."""
    return reward_breakdown(response, initial_list, relevant_docids, teacher_ranking, weights).reward

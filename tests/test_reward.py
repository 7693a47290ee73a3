"""The multi-view reward, branch by branch, with values computed by hand."""
from __future__ import annotations

import math

import pytest
from pydantic import ValidationError

from reasonrank.reward import RewardWeights, multi_view_reward, reward_breakdown

WINDOW = ["d1", "d2", "d3", "d4", "d5"]  # shown to the model as [1]..[5]
RELEVANT = ["d3", "d5"]
TEACHER = ["d3", "d5", "d1", "d2", "d4"]


def _response(answer: str) -> str:
    return f"<think>d3 answers it; d5 too.</think>\n<answer>{answer}</answer>"


@pytest.mark.parametrize("response", [
    "",
    "<answer>[3] > [1] > [5] > [2] > [4]</answer>",  # no reasoning
    "<answer>[3] > [1] > [5] > [2] > [4]</answer><think>late</think>",  # reasoning after the answer
    "<think>cut off by the token budget, [3] looks best",  # no answer
    "<think>ok</think><answer>[3] > [1] > [5] > [2] > [4]",  # answer never closed
    "[3] > [1] > [5] > [2] > [4]",
])
def test_malformed_responses_get_minus_one(response):
    assert multi_view_reward(response, WINDOW, RELEVANT, TEACHER) == -1.0
    assert reward_breakdown(response, WINDOW, RELEVANT, TEACHER).outcome == "malformed"


@pytest.mark.parametrize("answer", [
    "[3] > [1] > [5] > [2]",  # [4] missing
    "[3] > [3] > [1] > [5] > [2] > [4]",  # duplicate
    "[3] > [1] > [5] > [2] > [4] > [6]",  # out of range
    "[3] > [1] > [5] > [2] > [0]",  # 0 is not an id
    "passage three first",  # no ids at all
])
def test_answers_that_are_not_a_permutation_get_zero(answer):
    assert multi_view_reward(_response(answer), WINDOW, RELEVANT, TEACHER) == 0.0
    assert reward_breakdown(_response(answer), WINDOW, RELEVANT, TEACHER).outcome == "not_a_permutation"


def test_weighted_sum_by_hand():
    # predicted order d3 d1 d5 d2 d4, relevant {d3, d5}:
    #   NDCG@10 = (1/log2 2 + 1/log2 4) / (1/log2 2 + 1/log2 3) = 1.5 / 1.6309298 = 0.9197208
    #   Recall@10 = 2/2 = 1
    #   RBO vs teacher d3 d5 d1 d2 d4 (p = 1): prefix overlaps 1/1, 1/2, 3/3, 4/4, 5/5 -> 4.5 / 5 = 0.9
    #   reward = 0.9197208 + 0.2 * 1 + 0.1 * 0.9 = 1.2097208
    response = _response("[3] > [1] > [5] > [2] > [4]")
    parts = reward_breakdown(response, WINDOW, RELEVANT, TEACHER)
    assert parts.outcome == "scored"
    assert parts.ndcg == pytest.approx(1.5 / (1 + 1 / math.log2(3)))
    assert parts.recall == 1.0
    assert parts.rbo == pytest.approx(0.9)
    assert parts.reward == pytest.approx(1.2097208, abs=1e-6)
    assert multi_view_reward(response, WINDOW, RELEVANT, TEACHER) == parts.reward
    assert parts.as_dict()["reward"] == parts.reward


def test_teacher_order_scores_the_maximum():
    # d3 d5 first: NDCG 1, Recall 1, RBO 1 -> 1 + 0.2 + 0.1
    assert multi_view_reward(_response("[3] > [5] > [1] > [2] > [4]"), WINDOW, RELEVANT, TEACHER) == pytest.approx(1.3)


def test_weights_and_cutoff_are_configurable():
    # k = 2, same prediction d3 d1 d5 d2 d4: NDCG@2 = 1 / (1 + 1/log2 3) = 0.6131472, Recall@2 = 1/2;
    # weights ndcg 1, recall 1, rbo 0 -> 1.1131472
    weights = RewardWeights(ndcg=1.0, recall=1.0, rbo=0.0, k=2)
    reward = multi_view_reward(_response("[3] > [1] > [5] > [2] > [4]"), WINDOW, RELEVANT, TEACHER, weights)
    assert reward == pytest.approx(1 / (1 + 1 / math.log2(3)) + 0.5)
    assert RewardWeights() == RewardWeights(ndcg=1.0, recall=0.2, rbo=0.1, k=10)
    with pytest.raises(ValidationError, match="rbo_weight"):
        RewardWeights(rbo_weight=0.3)


def test_no_relevant_passage_leaves_only_the_rbo_term():
    # NDCG and Recall are 0 with nothing relevant (trec_eval); RBO vs teacher as above = 0.9 -> 0.09
    reward = multi_view_reward(_response("[3] > [1] > [5] > [2] > [4]"), WINDOW, [], TEACHER)
    assert reward == pytest.approx(0.09)


@pytest.mark.parametrize("answer, completed", [
    ("[3] > [1] > [5] > [2]", "[3] > [1] > [5] > [2] > [4]"),  # [4] missing: appended
    ("[3] > [1] > [3] > [5] > [2] > [4]", "[3] > [1] > [5] > [2] > [4]"),  # the repeated [3] dropped
    ("[5] > [2] > [9] > [1]", "[5] > [2] > [1] > [3] > [4]"),  # [9] ignored, [3] [4] appended
])
def test_an_incomplete_answer_can_be_scored_as_the_parser_completes_it_less_a_penalty(answer, completed):
    weights = RewardWeights(incomplete="completed", incomplete_penalty=0.25)
    parts = reward_breakdown(_response(answer), WINDOW, RELEVANT, TEACHER, weights)
    whole = reward_breakdown(_response(completed), WINDOW, RELEVANT, TEACHER, weights)
    assert parts.outcome == "not_a_permutation" and whole.outcome == "scored"
    assert parts.reward == pytest.approx(whole.reward - 0.25) and parts.ndcg == whole.ndcg and parts.rbo == whole.rbo
    assert parts.reward > 0.5  # not the paper's 0: its head holds a relevant passage
    # a malformed response stays at -1, and the default is the paper's
    assert reward_breakdown("<answer>[3]</answer>", WINDOW, RELEVANT, TEACHER, weights).reward == -1.0
    assert multi_view_reward(_response(answer), WINDOW, RELEVANT, TEACHER) == 0.0

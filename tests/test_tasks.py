"""Tasks in the RL loop: each row's prompt and reward come from its task (ReasonRank's listwise window,
DRanker's one-shot list, IRanker's elimination step), through real reward actors on a local Ray."""
from __future__ import annotations

import math
from pathlib import Path

import pytest

from reasonrank.data.training_sets import RLSample
from reasonrank.elimination import elimination_messages
from reasonrank.list_reward import list_reward_terms
from reasonrank.prompt import listwise_messages
from reasonrank.rl.advantages import dr_grpo_advantages, grouped_advantages
from reasonrank.rl.rollout import Rollout
from reasonrank.tasks import DEFAULT_TASK, task_named

CANDIDATES = ["c0", "c1", "c2", "c3"]
TEXTS = ["alpha", "beta [2]", "gamma", "delta"]
GT = "c2"  # shown as [3]: the right answer is never the first candidate


def _step(domain: str = "Passage-5") -> RLSample:
    return RLSample("s-k3", "s", domain, "what is gamma?", CANDIDATES, TEXTS, [], [GT], task="elimination_step")


def _list(domain: str = "Passage-5") -> RLSample:
    return RLSample("s", "s", domain, "what is gamma?", CANDIDATES, TEXTS, [], [GT], task="one_shot_list")


def _window() -> RLSample:
    return RLSample("w", "q", "biology", "q?", ["a", "b", "c"], ["pa", "pb", "pc"], ["b", "a", "c"], ["b"])


# ---- the step reward, by hand --------------------------------------------------------------------------------

@pytest.mark.parametrize("response, reward, outcome", [
    ("<think>delta is off topic</think><answer>[4]</answer>", 1.0, "scored"),  # a negative eliminated
    ("<think>gamma is off topic</think><answer>[3]</answer>", 0.0, "scored"),  # the positive eliminated
    ("<think>none</think><answer>[9]</answer>", -0.5, "no_candidate"),  # out of range: no candidate named
    ("<think>x</think><answer>[1] or [2]</answer>", -0.5, "no_candidate"),  # two names: none
    ("[4]", -1.0 - 0.5, "malformed"),  # no tags: format -1, and no answer names a candidate
    ("<think>x</think><answer>[1]</answer> trailing", 1.0 - 1.0, "malformed"),  # right, but text after
])
def test_step_reward_by_hand(response, reward, outcome):
    scored = task_named("elimination_step").reward(response, _step())
    assert scored.reward == pytest.approx(reward) and scored.outcome == outcome
    assert scored.terms["content"] + scored.terms["format"] == pytest.approx(reward)


# ---- the list reward, by hand --------------------------------------------------------------------------------

@pytest.mark.parametrize("response, overlap, ndcg, form", [
    ("<think>t</think><answer>[3] > [1] > [2] > [4]</answer>", 0.0, 1.0, 0.0),  # the positive first, all listed
    ("<think>t</think><answer>[1] > [2] > [3] > [4]</answer>", 0.0, 1 / math.log2(4), 0.0),  # positive third
    ("<think>t</think><answer>[2] > [3]</answer>", 2 / 4 - 1, 1 / math.log2(3), 0.0),  # half listed, positive 2nd
    ("<think>t</think><answer>[1] > [1] > [4] > [7]</answer>", 2 / 4 - 1, 0.0, 0.0),  # repeats, out of range, no gt
    ("<answer>[3] > [1] > [2] > [4]</answer>", 0.0, 1.0, -1.0),  # no reasoning: format -1
])
def test_list_reward_by_hand(response, overlap, ndcg, form):
    scored = task_named("one_shot_list").reward(response, _list())
    assert scored.terms["overlap"] == pytest.approx(overlap)
    assert scored.terms["ndcg"] == pytest.approx(ndcg)
    assert scored.terms["format"] == form
    assert scored.reward == pytest.approx(overlap + ndcg + form)


def test_list_reward_without_an_answer():
    scored = list_reward_terms("<think>cut off", CANDIDATES, GT)
    assert (scored.reward, scored.outcome) == (-2.0, "malformed")


# ---- the task decides the prompt -----------------------------------------------------------------------------

def test_rows_of_each_task_get_their_prompt():
    assert _window().messages() == listwise_messages("q?", ["pa", "pb", "pc"])
    assert _step().messages() == elimination_messages("what is gamma?", TEXTS)
    assert _list().messages() == listwise_messages("what is gamma?", TEXTS)


@pytest.mark.parametrize("domain, says", [("Rec-Movie", "candidate items"), ("Router-Cost", "candidate models")])
def test_recommendation_and_routing_prompts_name_their_candidates(domain, says):
    for messages in (_step(domain).messages(), _list(domain).messages()):
        system, user = (m["content"] for m in messages)
        assert says in system + user and "passage" not in (system + user).lower()
        assert "what is gamma?" in user
        assert "[1] alpha\n[2] beta (2)\n[3] gamma\n[4] delta\n" in user  # `[k]` in a candidate rewritten
    assert "least" in _step(domain).messages()[1]["content"]
    assert "[2] > [1]" in _list(domain).messages()[1]["content"]


def test_each_task_parses_in_its_own_terms():
    assert task_named("elimination_step").parse("<think>x</think><answer>[4]</answer>", _step()).index == 3
    assert task_named("one_shot_list").parse("<think>x</think><answer>[3] > [1]</answer>", _list()).order == [2, 0, 1, 3]
    assert task_named("listwise_window").parse("<think>x</think><answer>[2]</answer>", _window()).order == [1, 0, 2]


def test_rows_written_before_tasks_are_listwise_windows():
    record = _window().to_record()
    assert record["task"] == DEFAULT_TASK
    del record["task"]
    assert RLSample.from_record(record) == _window()
    assert RLSample.from_record(_step().to_record()) == _step()


def test_rows_refuse_what_their_task_cannot_use():
    with pytest.raises(ValueError, match="unknown task"):
        RLSample("x", "q", "d", "q", ["a"], ["pa"], ["a"], [], task="pointwise")
    with pytest.raises(ValueError, match="teacher_ranking"):  # a listwise window needs the teacher's order
        RLSample("x", "q", "d", "q", ["a", "b"], ["pa", "pb"], [], ["a"])
    with pytest.raises(ValueError, match="exactly one relevant"):
        RLSample("x", "q", "d", "q", ["a", "b"], ["pa", "pb"], [], ["a", "b"], task="elimination_step")


# ---- a mixed batch through the reward actors -----------------------------------------------------------------

def test_reward_actors_score_a_mixed_batch_by_each_rows_task(ray_cluster):
    from actors.reward_worker import RewardPool
    from reasonrank.reward import RewardWeights, reward_breakdown

    window, step = _window(), _step()
    listwise = "<think>b is it</think><answer>[2] > [1] > [3]</answer>"
    right, wrong = "<think>delta is off</think><answer>[4]</answer>", "<think>gamma is off</think><answer>[3]</answer>"
    pool = RewardPool(RewardWeights(), replicas=2)
    try:
        texts = [right, listwise, "no tags", wrong]
        samples = [step, window, window, step]
        scored = pool.score(texts, samples)
    finally:
        pool.close()
    good = reward_breakdown(listwise, window.docids, window.relevant_docids, window.teacher_ranking)
    assert [s["reward"] for s in scored] == pytest.approx([1.0, good.reward, -1.0, 0.0])
    assert [s["outcome"] for s in scored] == ["scored", "scored", "malformed", "scored"]
    assert scored[0]["content"] == 1.0 and scored[1]["ndcg"] == good.ndcg == 1.0
    # advantages still group by prompt, whatever the task: group 0 the window's two, group 1 the step's two
    rollouts = [Rollout(s.id, g, [1], [2], [0.0], t, "stop", 0, reward=r["reward"], index=j)
                for s, g, j, t, r in zip(samples, [1, 0, 0, 1], [0, 0, 1, 1], texts, scored)]
    half = (good.reward + 1.0) / 2
    assert grouped_advantages(rollouts, 2, 2, dr_grpo_advantages) == pytest.approx([0.5, half, -half, -0.5])


def test_the_grpo_configs_reward_weights_reach_the_reward_actors(ray_cluster):
    """`reward.weights.incomplete=completed` in a GRPO config changes what the reward actors give an answer that
    is not a permutation: the paper's 0 by default, its completed ranking's score less the penalty with it."""
    from actors.reward_worker import RewardPool
    from jobs.grpo_config import GRPOConfig
    from reasonrank.config import load_config

    incomplete = "<think>b is it</think><answer>[2] > [1]</answer>"  # completed: b a c, the teacher's order
    config, scores = Path(__file__).resolve().parent.parent / "configs" / "grpo-tiny.yaml", {}
    for setting in ("zero", "completed"):
        cfg = load_config(config, GRPOConfig, {"reward.weights.incomplete": setting})
        pool = RewardPool(cfg.reward.weights, replicas=1)
        try:
            scores[setting] = pool.score([incomplete], [_window()])[0]
        finally:
            pool.close()
    assert scores["zero"]["reward"] == 0.0 and scores["zero"]["outcome"] == "not_a_permutation"
    assert scores["completed"]["reward"] == pytest.approx(1.0 + 0.2 + 0.1 - 0.1)  # NDCG, Recall, RBO 1; penalty 0.1
    assert scores["completed"]["outcome"] == "not_a_permutation"

"""IRanker's on-policy elimination episodes (`reasonrank.rl.episodes`), pure: an episode's states and per-step
rewards on scripted responses, the positive never removed by a state update, a step's rounds and its fixed
number of groups. The GRPO run with episodes on is in tests/test_grpo_episodes.py."""
from __future__ import annotations

import pytest

from reasonrank.data.ranking_bench import RankingItem, episode_start_rows
from reasonrank.rl import episodes
from reasonrank.rl.episodes import EpisodeState, EpisodeStep, advance
from reasonrank.tasks import task_named

# The positive is the third candidate (never the first): "Jaws".
ITEM = RankingItem("train-0", "Rec-Movie", "I watched Alien, Heat.", ("Up", "Cars", "Jaws", "Fargo", "Brazil"),
                   "Jaws", "train")
START = episode_start_rows([ITEM])[0]
STEP = task_named("elimination_step")


def answer(k: int | str) -> str:
    return f"<think>the least likely</think><answer>[{k}]</answer>"


def test_an_episodes_states_and_step_rewards_follow_the_policys_eliminations():
    script = [  # per round: G = 3 responses; the first one that names a candidate moves the episode on
        ["no answer at all", answer(1), answer(3)],  # round 1: [1] = Up goes (response 0 names none)
        [answer(3), answer(2), "<answer>[9]</answer>"],  # round 2: shown Cars, Jaws, Fargo, Brazil; [3] = Fargo
        [answer(1), answer(2), answer(3)],  # round 3: shown Cars, Jaws, Brazil; [1] = Cars
        [answer(2), answer(1), answer(1)],  # round 4: shown Jaws, Brazil; [2] = Brazil: one left
    ]
    state, shown, rewards = EpisodeState.begin(START), [], []
    for responses in script:
        row = state.row
        shown.append([ITEM.candidates[int(d.split("#")[1])] for d in row.docids])
        assert row.passages == shown[-1] and row.task == "elimination_step" and row.relevant_docids == ["train-0#2"]
        rewards.append([STEP.reward(r, row).reward for r in responses])
        state = advance(state, responses)
    assert shown == [["Up", "Cars", "Jaws", "Fargo", "Brazil"], ["Cars", "Jaws", "Fargo", "Brazil"],
                     ["Cars", "Jaws", "Brazil"], ["Jaws", "Brazil"]]
    # +1 a negative eliminated, 0 the positive, -0.5 no candidate named; format -1 unless <think>…<answer>…
    assert rewards == [[-1.5, 1.0, 0.0], [1.0, 0.0, -1.5], [1.0, 0.0, 1.0], [1.0, 0.0, 0.0]]
    assert state == episodes.ONE_LEFT


def test_the_positive_is_never_removed_by_a_state_update():
    state = advance(EpisodeState.begin(START), [answer(2)])  # Cars goes: Up, Jaws, Fargo, Brazil
    assert advance(state, [answer(2), answer(1)]) == episodes.POSITIVE_ELIMINATED  # [2] is now Jaws
    assert advance(state, ["<answer>[7]</answer>", answer(2)]) == episodes.POSITIVE_ELIMINATED
    # every elimination from every reachable state removes exactly the named candidate, never the positive
    frontier, seen = [EpisodeState.begin(START)], 0
    while frontier:
        state = frontier.pop()
        for k in range(1, len(state.remaining) + 1):
            after = advance(state, [answer(k)])
            named = state.row.docids[k - 1]
            if named == "train-0#2":
                assert after == episodes.POSITIVE_ELIMINATED
            elif len(state.remaining) == 2:
                assert after == episodes.ONE_LEFT
            else:
                assert after.row.docids == [d for d in state.row.docids if d != named]
                assert after.round == state.round + 1
                frontier.append(after)
                seen += 1
    assert seen == 4 + 4 * 3 + 4 * 3 * 2  # states of 4, 3 and 2 candidates reached


def test_an_episode_ends_without_a_named_candidate_or_at_the_round_cap():
    assert advance(EpisodeState.begin(START), ["[1]", "<answer>[1] > [2]</answer>"]) == episodes.NO_CANDIDATE
    assert advance(EpisodeState.begin(START), [answer(1)], max_rounds=1) == episodes.ROUND_CAP
    assert isinstance(advance(EpisodeState.begin(START), [answer(1)], max_rounds=2), EpisodeState)


def test_a_step_plays_rounds_until_it_has_its_groups():
    items = [RankingItem(f"train-{n}", "Rec-Movie", "history", ITEM.candidates, ITEM.gt, "train") for n in range(5)]
    starts = iter(episode_start_rows(items))
    step = EpisodeStep(groups=7, parallel=3, max_rounds=None, draw=lambda: next(starts))
    played = []
    while states := step.next_round():
        played.append([(s.start.id, len(s.remaining)) for s in states])
        # train-0 always drops [1]; train-1 drops the positive (Jaws, [3]) first; train-2 names nothing
        step.record([[answer(1)] if s.start.id != "train-1" else [answer(3)] for s in states[:2]] +
                    [["none"]] * (len(states) - 2))
    assert played == [[("train-0", 5), ("train-1", 5), ("train-2", 5)],
                      [("train-0", 4), ("train-3", 5), ("train-4", 5)],
                      [("train-0", 3)]]
    assert [s.row.id for s in step.states] == ["train-0-r1", "train-1-r1", "train-2-r1", "train-0-r2",
                                              "train-3-r1", "train-4-r1", "train-0-r3"]
    # train-0's third [1] is Jaws (Up and Cars gone): the positive; train-3 moved on but the step is full
    assert step.stats() == {"rounds": 3, "states": 7,
                            "ended": {"one_left": 0, "positive_eliminated": 2, "no_candidate": 2,
                                      "round_cap": 0, "step_full": 1},
                            "candidates": {"5": 5, "4": 1, "3": 1}}


def test_a_step_refuses_more_parallel_episodes_than_groups():
    with pytest.raises(ValueError, match="parallel"):
        EpisodeStep(groups=2, parallel=3, max_rounds=None, draw=lambda: START)


def test_episode_config_names_the_wrong_keys_and_is_fingerprinted():
    from jobs.grpo import results_fingerprint
    from jobs.grpo_config import GRPOConfig
    from reasonrank.config import ConfigError, parse_config

    bench = {"source": "ranking_bench"}
    with pytest.raises(ConfigError, match="rl_task=elimination_episode needs algorithm.max_staleness 0"):
        parse_config({"rl_task": "elimination_episode", "data": bench, "algorithm": {"max_staleness": 1}}, GRPOConfig)
    with pytest.raises(ConfigError, match=r"episodes.parallel \(4\) exceeds algorithm.prompts_per_step \(2\)"):
        parse_config({"rl_task": "elimination_episode", "data": bench, "algorithm": {"prompts_per_step": 2}},
                     GRPOConfig)
    with pytest.raises(ConfigError, match="episodes: only rl_task=elimination_episode"):
        parse_config({"rl_task": "elimination_step", "data": bench, "episodes": {"parallel": 2}}, GRPOConfig)
    cfg = parse_config({"rl_task": "elimination_episode", "data": bench, "episodes": {"parallel": 3,
                                                                                      "max_rounds": 2}}, GRPOConfig)
    assert {k: v for k, v in results_fingerprint(cfg).items() if k.startswith("episodes")} == {
        "episodes.parallel": 3, "episodes.max_rounds": 2}


def test_episode_rows_start_at_each_items_full_list():
    from reasonrank.data.ranking_bench import rl_rows

    second = RankingItem("train-1", "Router-Cost", "a haiku", ("big", "small", "mid"), "mid", "train")
    rows = rl_rows([ITEM, second], "elimination_episode")
    assert [(r.id, r.task, r.passages, r.relevant_docids) for r in rows] == [
        ("train-0", "elimination_step", list(ITEM.candidates), ["train-0#2"]),
        ("train-1", "elimination_step", ["big", "small", "mid"], ["train-1#2"])]

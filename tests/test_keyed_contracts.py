"""Contracts decided by keys, not by positions: GRPO groups and learner shares, seeds of steps, the evaluation
hold-out, "the same file", and a fetched model's cache entry."""
from __future__ import annotations

import random

import fsspec
import pytest

from actors.sharding import by_key, contiguous
from jobs.grpo import hold_out_queries
from reasonrank import storage
from reasonrank.data.training_sets import RLSample
from reasonrank.rl.advantages import ADVANTAGE_ESTIMATORS, grouped_advantages
from reasonrank.rl.rollout import Rollout
from reasonrank.rl.sampler import step_seed

G, PROMPTS = 4, 3


def _rollouts() -> list[Rollout]:
    """PROMPTS groups of G responses, prompt-major, rewards distinct per group so a mix-up shows."""
    return [Rollout(f"s{g}", g, [1], [2], [0.0], "", "stop", 0, reward=10.0 * g + j * (g + 1), index=j)
            for g in range(PROMPTS) for j in range(G)]


@pytest.mark.parametrize("name", sorted(ADVANTAGE_ESTIMATORS))
def test_advantages_follow_the_group_key_not_the_list_order(name):
    rollouts = _rollouts()
    in_order = dict(zip([r.key for r in rollouts], grouped_advantages(rollouts, G, PROMPTS, ADVANTAGE_ESTIMATORS[name])))
    shuffled = rollouts[:]
    random.Random(0).shuffle(shuffled)
    again = dict(zip([r.key for r in shuffled], grouped_advantages(shuffled, G, PROMPTS, ADVANTAGE_ESTIMATORS[name])))
    assert again == pytest.approx(in_order)
    for g in range(PROMPTS):  # each group is centred on its own mean
        assert sum(in_order[(g, j)] for j in range(G)) == pytest.approx(0.0, abs=1e-5)


@pytest.mark.parametrize("broken,words", [
    (lambda rs: rs[:-1], "group 2 holds responses [0, 1, 2]"),
    (lambda rs: rs + rs[:1], "group 0 holds responses [0, 0, 1, 2, 3]"),
    (lambda rs: [*rs[:G], *rs[G + G:]], "2 groups, expected 3"),
    (lambda rs: [Rollout("other", 0, [1], [2], [0.0], "", "stop", 0, index=0), *rs[1:]], "group 0 mixes prompts"),
])
def test_rollouts_that_do_not_form_the_groups_are_refused(broken, words):
    with pytest.raises(ValueError, match=words.replace("[", r"\[").replace("]", r"\]")):
        grouped_advantages(broken(_rollouts()), G, PROMPTS, ADVANTAGE_ESTIMATORS["grpo"])


def test_learner_shares_are_decided_by_keys():
    rollouts = _rollouts()
    shares = by_key(rollouts, 2, key=lambda r: r.key)
    shuffled = rollouts[:]
    random.Random(1).shuffle(shuffled)
    assert [[r.key for r in s] for s in by_key(shuffled, 2, key=lambda r: r.key)] == [[r.key for r in s] for s in shares]
    assert [r.key for r in shares[0]] == [r.key for r in rollouts[0::2]]  # in order: what the ranks always took
    with pytest.raises(ValueError, match=r"two items carry the key \(1, 2\)"):
        by_key(rollouts + [rollouts[6]], 2, key=lambda r: r.key)


def test_contiguous_shares_cover_the_batch_and_an_empty_one():
    assert contiguous(list(range(7)), 3) == [[0, 1, 2], [3, 4], [5, 6]]
    assert contiguous([], 3) == [[], [], []]


def test_reward_pool_scores_an_empty_batch(ray_cluster):
    from actors.reward_worker import RewardPool
    from reasonrank.reward import RewardWeights

    pool = RewardPool(RewardWeights(), replicas=2)
    try:
        assert pool.score([], []) == []
        sample = RLSample("s", "q", "d", "query", ["a", "b"], ["pa", "pb"], ["b", "a"], ["b"])
        (scored,) = pool.score(["<think>x</think><answer>[2] > [1]</answer>"], [sample])
        assert scored["outcome"] == "scored" and scored["reward"] > 1.0
    finally:
        pool.close()


@pytest.mark.parametrize("per_step", [32, 1000, 4096])
def test_steps_never_share_a_seed(per_step):
    seeds = [step_seed(7, step, per_step) + k for step in range(50) for k in range(per_step)]
    assert len(set(seeds)) == len(seeds)


def test_step_seeds_of_small_steps_stay_what_they_were():
    assert [step_seed(3, s, 32) for s in range(3)] == [3 * 1_000_003 + s * 1_000 for s in range(3)]


def _row(i: int, qid: str) -> RLSample:
    return RLSample(f"r{i}", qid, "d", "query", ["a", "b"], ["pa", "pb"], ["a", "b"], ["a"])


def test_hold_out_keeps_every_copy_of_a_held_out_query_out_of_training():
    # each query with three shuffled copies, adjacent, as the synthesis job writes them
    rows = [_row(i, f"q{i // 3}") for i in range(12)]
    evaluation, training = hold_out_queries(rows, 4)
    assert [r.id for r in evaluation] == ["r0", "r1", "r2", "r3"]  # the rows evaluated are the first ones
    assert {r.qid for r in evaluation} == {"q0", "q1"}
    assert not {r.qid for r in training} & {"q0", "q1"}  # q1's other copies are not trained on
    assert [r.id for r in training] == [f"r{i}" for i in range(6, 12)]


def test_same_location_compares_resolved_paths(tmp_path, monkeypatch):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "rl.parquet").write_text("x")
    (tmp_path / "link").symlink_to(tmp_path / "data")
    monkeypatch.chdir(tmp_path)
    assert storage.same_location("data/rl.parquet", str(tmp_path / "data" / "rl.parquet"))
    assert storage.same_location("./data/../data/rl.parquet", "link/rl.parquet")
    assert not storage.same_location("data/rl.parquet", "data/other.parquet")
    assert storage.same_location("memory://bucket/rl.parquet", "memory:///bucket/rl.parquet")


def test_a_model_exported_again_to_the_same_uri_is_fetched_again(tmp_path):
    fs = fsspec.filesystem("memory")
    uri = "memory://exports/model"
    fs.pipe("/exports/model/config.json", b'{"v": 1}')
    first = storage.local_dir(uri, cache_dir=str(tmp_path))
    assert (tmp_path / first / "config.json").read_text() == '{"v": 1}'
    assert storage.local_dir(uri, cache_dir=str(tmp_path)) == first  # unchanged: the copy is reused
    fs.pipe("/exports/model/config.json", b'{"v": 2}')  # re-exported: same URI, same size
    second = storage.local_dir(uri, cache_dir=str(tmp_path))
    assert (tmp_path / second / "config.json").read_text() == '{"v": 2}'
    fs.rm("/exports", recursive=True)

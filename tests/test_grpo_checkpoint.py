"""GRPO checkpoints on their own (`jobs/grpo_checkpoint.py`): what a step's folder holds, which folders count as
complete, how many are kept. The run that kills and resumes a real job is `tests/test_grpo_faults.py`."""
from __future__ import annotations

import json

from jobs import grpo_checkpoint
from jobs.grpo_checkpoint import SampledBatch
from reasonrank import storage
from reasonrank.rl.rollout import Rollout


class FakeLearners:
    """Stands in for `actors.learner.LearnerGroup`, whose driver-side `save` and `load` are blocking calls: saves
    the trainer state into the folder as every rank does with its part, and loads it back."""

    def save(self, path: str, trainer_state: dict) -> None:
        storage.makedirs(path)
        storage.write_text_atomic(storage.join(path, "rank-0.json"), json.dumps(trainer_state))

    def load(self, path: str) -> dict:
        with storage.open_file(storage.join(path, "rank-0.json")) as f:
            return json.load(f)


def _rollout(group: int, index: int, version: int) -> Rollout:
    return Rollout(sample_id=f"q{group}", group=group, prompt_ids=[5, 6, 7], response_ids=[8 + index, 9],
                   rollout_logprobs=[-0.25 * (index + 1), -1.5], text=f"<answer>[{index + 1}]</answer>",
                   finish_reason="stop", weights_version=version, reward=0.5 + index, index=index,
                   reward_terms={"ndcg": 0.75, "outcome": "scored"}, passages_cut_to=64 if index else None)


def test_the_newest_complete_checkpoint_comes_back_with_its_batches_sampled_ahead(tmp_path):
    out, learners = str(tmp_path / "grpo"), FakeLearners()
    assert grpo_checkpoint.load_newest(out, learners) is None
    for step in (2, 4, 6):
        ahead = [SampledBatch(step + 1, [3, 1], [_rollout(0, 0, step), _rollout(1, 1, step)])]
        grpo_checkpoint.save(out, learners, {"step": step, "sampler": {"epoch": 0, "position": 2 * step}}, ahead,
                             keep=2)
    # a folder whose saving died before the trainer state was written is not a checkpoint
    storage.makedirs(grpo_checkpoint.checkpoint_dir(out, 8))
    assert grpo_checkpoint.complete_checkpoints(out) == [4, 6]  # step 2 pruned: keep=2
    assert sorted(p.name for p in (tmp_path / "grpo" / "checkpoints").iterdir()) == [
        "step-000004", "step-000006", "step-000008"]

    path, state, ahead = grpo_checkpoint.load_newest(out, learners)
    assert path == grpo_checkpoint.checkpoint_dir(out, 6)
    assert state == {"step": 6, "sampler": {"epoch": 0, "position": 12}}
    assert ahead == [SampledBatch(7, [3, 1], [_rollout(0, 0, 6), _rollout(1, 1, 6)])]

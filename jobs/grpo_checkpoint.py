"""GRPO checkpoints, one folder per step under `<output_dir>/checkpoints/step-N` (a local folder or a URI): the
learners' state (weights, optimizer, schedule, RNGs), the batches already sampled for later steps
(`ahead.jsonl`) and the trainer's state (`trainer_state.json`: step, data cursor, metric history,
evaluations). The trainer state is written last, so a folder without it is incomplete (the job died while
saving) and is never resumed from."""
from __future__ import annotations

import dataclasses
import json
from typing import TYPE_CHECKING, Any, NamedTuple

from reasonrank import storage
from reasonrank.rl.rollout import Rollout

if TYPE_CHECKING:
    from actors.learner import LearnerGroup


class SampledBatch(NamedTuple):
    """A later step's batch, sampled before the checkpoint: trained on after a resume, not sampled again."""

    step: int
    indices: list[int]  # the rows' places in the RL set
    rollouts: list[Rollout]


def checkpoint_dir(output_dir: str, step: int) -> str:
    return storage.join(output_dir, "checkpoints", f"step-{step:06d}")


def complete_checkpoints(output_dir: str) -> list[int]:
    """Steps of the checkpoints whose saving finished, oldest first."""
    root = storage.join(output_dir, "checkpoints")
    steps = []
    for name in storage.listdir(root):
        if name.startswith("step-") and storage.exists(storage.join(root, name, "trainer_state.json")):
            steps.append(int(name.removeprefix("step-")))
    return sorted(steps)


def save(output_dir: str, learners: LearnerGroup, state: dict[str, Any], ahead: list[SampledBatch],
                    keep: int) -> str:
    """Write the checkpoint of step `state["step"]`, then delete all but the newest `keep` complete ones."""
    path = checkpoint_dir(output_dir, state["step"])
    learners.save(path, state)
    storage.write_jsonl_atomic(storage.join(path, "ahead.jsonl"), [
        {"step": b.step, "indices": b.indices, "rollouts": [dataclasses.asdict(r) for r in b.rollouts]}
        for b in ahead])
    storage.write_text_atomic(storage.join(path, "trainer_state.json"), json.dumps(state))
    for old in complete_checkpoints(output_dir)[:-keep]:
        fs, root = storage.filesystem(checkpoint_dir(output_dir, old))
        fs.rm(root, recursive=True)
    return path


def load_newest(output_dir: str, learners: LearnerGroup) -> tuple[str, dict[str, Any], list[SampledBatch]] | None:
    """Load the newest complete checkpoint into the learners: (its folder, the trainer state, the batches sampled
    ahead), or None when there is none."""
    complete = complete_checkpoints(output_dir)
    if not complete:
        return None
    path = checkpoint_dir(output_dir, complete[-1])
    state = learners.load(path)
    ahead = [SampledBatch(b["step"], b["indices"], [Rollout(**r) for r in b["rollouts"]])
             for b in storage.read_jsonl(storage.join(path, "ahead.jsonl"))]
    return path, state, ahead

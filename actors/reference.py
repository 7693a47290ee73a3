"""The reference policy in a Ray actor of its own (`reference.placement: actor`): the frozen starting model
on its own device, scoring every rollout of a step while the learners keep their memory for the policy.
The colocated alternative lives inside each learner (`actors/learner.py`); both use
`reasonrank.rl.reference.ReferencePolicy`.
"""
from __future__ import annotations

import ray
import torch

from reasonrank import storage
from reasonrank.rl.batch import pack
from reasonrank.rl.reference import ReferencePolicy
from reasonrank.rl.rollout import Rollout
from reasonrank.training.config import DeepSpeedConfig


@ray.remote
class ReferenceWorker:
    def __init__(self, path: str, deepspeed: DeepSpeedConfig, micro_batch_size: int, temperature: float,
                 pad_id: int):
        """Device and dtype are decided here, where the model runs (`precision: auto` is bf16 on CUDA): the
        driver that starts this actor may have no GPU at all (a KubeRay head pod)."""
        device = "cuda" if torch.cuda.is_available() else "cpu"
        dtype = torch.bfloat16 if deepspeed.use_bf16() else torch.float32
        self.policy = ReferencePolicy.load(storage.local_dir(path), dtype, device)
        self.micro_batch_size, self.temperature, self.pad_id = micro_batch_size, temperature, pad_id

    def logprobs(self, rollouts: list[Rollout]) -> list[list[float]]:
        """log pi_ref of every response token of every rollout, in order."""
        out: list[list[float]] = []
        for lo in range(0, len(rollouts), self.micro_batch_size):
            part = rollouts[lo: lo + self.micro_batch_size]
            batch = pack([r.prompt_ids for r in part], [r.response_ids for r in part], self.pad_id)
            values = self.policy.logprobs(batch, self.temperature)
            out.extend(values[i, : len(r.response_ids)].tolist() for i, r in enumerate(part))
        return out

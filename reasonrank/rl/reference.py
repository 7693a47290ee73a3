"""The reference policy: the frozen starting model the KL term keeps the trained policy close to.

It lives either inside each learner process ("colocated") or in a Ray actor of its own
(`actors/reference.py`). A colocated reference under ZeRO-3 is itself a DeepSpeed ZeRO-3 engine, so each
learner holds only its shard of it (offloaded to the CPU if asked, by DeepSpeed); otherwise it is a plain
copy, which with `offload` waits on the CPU and visits the accelerator only for its forward pass.
"""
from __future__ import annotations

import torch

from reasonrank.rl.batch import TokenBatch, response_logprobs


class ReferencePolicy:
    def __init__(self, model: torch.nn.Module, device: torch.device | str, offload: bool = False):
        """`model`: a causal LM already placed (e.g. a DeepSpeed engine), or on the CPU when `offload`."""
        self.model, self.device = model, torch.device(device)
        self.offload = offload and self.device.type != "cpu"

    @staticmethod
    def load(path: str, dtype: torch.dtype = torch.float32, device: str = "cpu",
             offload: bool = False) -> "ReferencePolicy":
        """A plain (unsharded) copy of the model at `path`."""
        from transformers import AutoModelForCausalLM

        model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype).eval().requires_grad_(False)
        on_cpu = offload or torch.device(device).type == "cpu"
        return ReferencePolicy(model.to("cpu" if on_cpu else device), device, offload)

    @torch.no_grad()
    def logprobs(self, batch: TokenBatch, temperature: float = 1.0) -> torch.Tensor:
        """log pi_ref of each response token, (B, R), on the CPU."""
        if self.offload:
            self.model.to(self.device)
        try:
            return response_logprobs(self.model, batch.to(self.device), temperature).cpu()
        finally:
            if self.offload:
                self.model.to("cpu")

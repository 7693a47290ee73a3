"""The GRPO policy loss: PPO's clipped surrogate (Schulman et al., 2017, "Proximal Policy Optimization
Algorithms", eq. 7) per response token, plus a KL penalty to the reference model, aggregated over tokens.

Aggregations (how per-token values of a batch of responses become one number; `mask` marks response tokens):
    token_mean           sum over all tokens / number of tokens — every token weighs the same (DAPO, Yu et al.,
                         2025; ReasonRank's "token-mean")
    seq_mean_token_mean  mean over each response's tokens, then over responses — the original GRPO
                         (Shao et al., 2024, eq. 3); long responses' tokens weigh less
    seq_mean_token_sum   sum over each response's tokens, then mean over responses (Dr. GRPO, Liu et al., 2025,
                         with the constant normaliser left to the learning rate)
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import torch

from reasonrank.rl.kl import KL_ESTIMATORS

Aggregation = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def token_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return (values * mask).sum() / mask.sum().clamp(min=1)


def token_sum_over(values: torch.Tensor, mask: torch.Tensor, tokens: float) -> torch.Tensor:
    """token_mean with a denominator shared by several batches (the micro-batches of one update)."""
    return (values * mask).sum() / tokens


def seq_mean_token_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    per_seq = (values * mask).sum(dim=-1) / mask.sum(dim=-1).clamp(min=1)
    return per_seq.mean()


def seq_mean_token_sum(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return (values * mask).sum(dim=-1).mean()


AGGREGATIONS: dict[str, Aggregation] = {
    "token_mean": token_mean,
    "seq_mean_token_mean": seq_mean_token_mean,
    "seq_mean_token_sum": seq_mean_token_sum,
}


def clipped_policy_loss(logprobs: torch.Tensor, old_logprobs: torch.Tensor, advantages: torch.Tensor,
                        clip_eps: float = 0.2) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token max(-A·ratio, -A·clip(ratio, 1-eps, 1+eps)) with ratio = exp(logprobs - old_logprobs),
    and a per-token flag saying where the clipped branch was taken (the clip fraction's numerator).

    `advantages` is per token (a response's advantage repeated over its tokens) or broadcastable to it.
    """
    ratio = torch.exp(logprobs - old_logprobs)
    unclipped = -advantages * ratio
    clipped = -advantages * ratio.clamp(1.0 - clip_eps, 1.0 + clip_eps)
    return torch.maximum(unclipped, clipped), (clipped > unclipped).float()


@dataclass(frozen=True)
class GRPOLoss:
    """The whole per-batch objective: aggregate(policy loss) + kl_coef · aggregate(KL estimate)."""

    clip_eps: float = 0.2
    kl_coef: float = 0.001
    kl_estimator: str = "k3"
    aggregation: str = "token_mean"

    def __post_init__(self):
        if self.kl_estimator not in KL_ESTIMATORS:
            raise ValueError(f"unknown KL estimator {self.kl_estimator!r}; choose from {sorted(KL_ESTIMATORS)}")
        if self.aggregation not in AGGREGATIONS:
            raise ValueError(f"unknown loss aggregation {self.aggregation!r}; choose from {sorted(AGGREGATIONS)}")

    def __call__(self, logprobs: torch.Tensor, old_logprobs: torch.Tensor, ref_logprobs: torch.Tensor | None,
                 advantages: torch.Tensor, mask: torch.Tensor, tokens: float | None = None
                 ) -> tuple[torch.Tensor, dict[str, float]]:
        """(loss, stats) for token tensors shaped (batch, response_len); `advantages` shaped (batch,) or like them.

        `tokens`: token_mean's denominator when this batch is one micro-batch of a larger update (the update's
        response tokens over the micro-batches they are averaged over, see the learner); None: this batch's own.
        """
        if advantages.dim() == 1:
            advantages = advantages.unsqueeze(-1)
        mask = mask.to(logprobs.dtype)
        aggregate = AGGREGATIONS[self.aggregation]
        if self.aggregation == "token_mean" and tokens is not None:
            aggregate = partial(token_sum_over, tokens=tokens)
        per_token, was_clipped = clipped_policy_loss(logprobs, old_logprobs, advantages, self.clip_eps)
        policy_loss = aggregate(per_token, mask)
        loss = policy_loss
        stats = {"policy_loss": policy_loss.item(), "clip_fraction": token_mean(was_clipped, mask).item()}
        if ref_logprobs is not None:
            kl = aggregate(KL_ESTIMATORS[self.kl_estimator](logprobs, ref_logprobs), mask)
            loss = loss + self.kl_coef * kl
            stats["kl"] = kl.item()
        stats["loss"] = loss.item()
        return loss, stats

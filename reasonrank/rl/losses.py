"""The GRPO policy loss: PPO's clipped surrogate (Schulman et al., 2017, "Proximal Policy Optimization
Algorithms", eq. 7) per response token, plus a KL penalty to the reference model, aggregated over tokens.
Off-policy (asynchronous GRPO: rollouts sampled by weights up to k versions old), each token's surrogate is
weighted by the truncated behaviour importance weight of decoupled PPO (`truncated_importance_weight`).

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


def truncated_importance_weight(proximal_logprobs: torch.Tensor, behaviour_logprobs: torch.Tensor,
                                cap: float) -> torch.Tensor:
    """Per token min(pi_prox / pi_behav, cap): decoupled PPO's behaviour correction.

    Decoupled PPO (Hilton, Cobbe and Schulman, 2022, "Batch size-invariance for policy optimization"; used for
    stale rollouts by AReaL, Fu et al., 2025, "AReaL: A Large-Scale Asynchronous Reinforcement Learning System
    for Language Reasoning", its decoupled PPO objective) separates two policies that on-policy PPO equates:
    the behaviour policy that sampled the tokens (the engine's weights, k versions old; its log-probabilities
    come with the rollout) and the proximal policy the clipped ratio is taken against (the learner's weights
    before this update, recomputed). The clipped surrogate of pi_theta / pi_prox is then weighted by
    pi_prox / pi_behav, truncated at `cap` as IMPALA's V-trace truncates its rho (Espeholt et al., 2018) so
    that a token the old weights sampled unluckily cannot dominate an update. No gradient flows through it.
    """
    return torch.exp(proximal_logprobs - behaviour_logprobs).clamp(max=cap).detach()


@dataclass(frozen=True)
class GRPOLoss:
    """The whole per-batch objective: aggregate(w · policy loss) + kl_coef · aggregate(KL estimate), where w is
    the truncated behaviour importance weight when `is_cap` is set (off-policy rollouts) and 1 otherwise."""

    clip_eps: float = 0.2
    kl_coef: float = 0.001
    kl_estimator: str = "k3"
    aggregation: str = "token_mean"
    is_cap: float | None = None  # truncation of the behaviour importance weight; None: on-policy, no weight

    def __post_init__(self):
        if self.kl_estimator not in KL_ESTIMATORS:
            raise ValueError(f"unknown KL estimator {self.kl_estimator!r}; choose from {sorted(KL_ESTIMATORS)}")
        if self.aggregation not in AGGREGATIONS:
            raise ValueError(f"unknown loss aggregation {self.aggregation!r}; choose from {sorted(AGGREGATIONS)}")

    def __call__(self, logprobs: torch.Tensor, old_logprobs: torch.Tensor, ref_logprobs: torch.Tensor | None,
                 advantages: torch.Tensor, mask: torch.Tensor, tokens: float | None = None,
                 behaviour_logprobs: torch.Tensor | None = None) -> tuple[torch.Tensor, dict[str, float]]:
        """(loss, stats) for token tensors shaped (batch, response_len); `advantages` shaped (batch,) or like them.

        `old_logprobs` are the proximal policy's (the learner's weights before this update); with `is_cap` set,
        `behaviour_logprobs` are those of the weights that sampled the tokens (the engine's).
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
        stats = {"clip_fraction": token_mean(was_clipped, mask).item()}
        if self.is_cap is not None:
            if behaviour_logprobs is None:
                raise ValueError("GRPOLoss with is_cap needs the behaviour (engine) log-probabilities")
            raw = torch.exp(old_logprobs - behaviour_logprobs).detach()
            weight = truncated_importance_weight(old_logprobs, behaviour_logprobs, self.is_cap)
            per_token = weight * per_token
            stats |= {"is_weight_mean": token_mean(weight, mask).item(),
                      "is_weight_max": (raw * mask).max().item(),
                      "is_truncated": token_mean((raw > self.is_cap).to(mask.dtype), mask).item()}
        policy_loss = aggregate(per_token, mask)
        loss = policy_loss
        stats["policy_loss"] = policy_loss.item()
        if ref_logprobs is not None:
            kl = aggregate(KL_ESTIMATORS[self.kl_estimator](logprobs, ref_logprobs), mask)
            loss = loss + self.kl_coef * kl
            stats["kl"] = kl.item()
        stats["loss"] = loss.item()
        return loss, stats

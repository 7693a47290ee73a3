"""Per-token Monte-Carlo estimators of KL(policy || reference) from tokens sampled by the policy
(Schulman, 2020, "Approximating KL Divergence", http://joschu.net/blog/kl-approx.html).

With log_ratio = log pi(x) - log pi_ref(x) for x ~ pi:
    k1 = log_ratio                               unbiased, high variance, can be negative
    k2 = log_ratio^2 / 2                         biased, low variance, always >= 0
    k3 = exp(-log_ratio) - 1 + log_ratio         unbiased, low variance, always >= 0
k3 is the "low-variance" estimator GRPO puts in its loss (Shao et al., 2024, eq. 4) and ReasonRank uses.
"""
from __future__ import annotations

from collections.abc import Callable

import torch

KLEstimator = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

# exp() of a log-ratio beyond this overflows float16/bfloat16 and dominates the loss; OpenRLHF and verl clamp
# the same way. Far outside it the policy has left the reference anyway.
LOG_RATIO_CLAMP = 20.0


def kl_k1(logprobs: torch.Tensor, ref_logprobs: torch.Tensor) -> torch.Tensor:
    return logprobs - ref_logprobs


def kl_k2(logprobs: torch.Tensor, ref_logprobs: torch.Tensor) -> torch.Tensor:
    return 0.5 * (logprobs - ref_logprobs).square()


def kl_k3(logprobs: torch.Tensor, ref_logprobs: torch.Tensor) -> torch.Tensor:
    log_ratio = (logprobs - ref_logprobs).clamp(-LOG_RATIO_CLAMP, LOG_RATIO_CLAMP)
    return torch.exp(-log_ratio) - 1.0 + log_ratio


KL_ESTIMATORS: dict[str, KLEstimator] = {"k1": kl_k1, "k2": kl_k2, "k3": kl_k3}

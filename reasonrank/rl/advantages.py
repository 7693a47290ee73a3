"""Group-relative advantage estimators: every prompt is sampled G times, and each response is scored
against the other responses to the same prompt, so no value model is needed.

Each estimator takes `rewards` shaped (num_prompts, G) and returns advantages of the same shape; the learner
broadcasts a response's advantage to all of its tokens.
"""
from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from typing import Any

import torch

AdvantageEstimator = Callable[[torch.Tensor], torch.Tensor]


def _check(rewards: torch.Tensor, min_group: int = 1) -> None:
    if rewards.dim() != 2 or rewards.shape[1] < min_group:
        raise ValueError(f"rewards must be shaped (num_prompts, G) with G >= {min_group}, got {tuple(rewards.shape)}")


def grpo_advantages(rewards: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """GRPO (Shao et al., 2024, "DeepSeekMath", §4.1.2 outcome supervision): (r - mean(group)) / (std(group) + eps).

    The std is the unbiased sample std over the group (as verl and OpenRLHF compute it); a group whose
    responses all scored the same gets advantage 0 everywhere, so it teaches nothing.
    """
    _check(rewards, min_group=2)
    mean = rewards.mean(dim=1, keepdim=True)
    std = rewards.std(dim=1, keepdim=True)
    return (rewards - mean) / (std + eps)


def dr_grpo_advantages(rewards: torch.Tensor) -> torch.Tensor:
    """Dr. GRPO (Liu et al., 2025, "Understanding R1-Zero-Like Training: A Critical Perspective"):
    r - mean(group), without GRPO's division by the std, which over-weights near-unanimous groups."""
    _check(rewards)
    return rewards - rewards.mean(dim=1, keepdim=True)


def rloo_advantages(rewards: torch.Tensor) -> torch.Tensor:
    """RLOO (Ahmadian et al., 2024, "Back to Basics: Revisiting REINFORCE Style Optimization…"): each
    response's baseline is the mean reward of the OTHER G-1 responses, r_i - (sum - r_i)/(G-1)."""
    _check(rewards, min_group=2)
    g = rewards.shape[1]
    others = (rewards.sum(dim=1, keepdim=True) - rewards) / (g - 1)
    return rewards - others


ADVANTAGE_ESTIMATORS: dict[str, AdvantageEstimator] = {
    "grpo": grpo_advantages,
    "dr_grpo": dr_grpo_advantages,
    "rloo": rloo_advantages,
}


def grouped_advantages(rollouts: Sequence[Any], group_size: int, groups: int,
                       estimator: AdvantageEstimator) -> list[float]:
    """The advantage of each rollout (in the order given), computed among the rollouts that share its
    `group` key — not among its neighbours in the list. Every group must hold `group_size` responses to one
    prompt (`sample_id`), with indices 0 … G-1, and there must be `groups` of them: anything else (a lost,
    doubled or misfiled rollout) raises instead of mixing one prompt's baseline into another's."""
    members: dict[int, list[int]] = defaultdict(list)
    for i, r in enumerate(rollouts):
        members[r.group].append(i)
    problems = []
    if len(members) != groups:
        problems.append(f"{len(members)} groups, expected {groups}")
    for g, ix in sorted(members.items()):
        if sorted(rollouts[i].index for i in ix) != list(range(group_size)):
            problems.append(f"group {g} holds responses {sorted(rollouts[i].index for i in ix)}, "
                            f"expected 0…{group_size - 1}")
        if len({rollouts[i].sample_id for i in ix}) != 1:
            problems.append(f"group {g} mixes prompts {sorted({rollouts[i].sample_id for i in ix})}")
    if problems:
        raise ValueError("rollouts do not form the step's groups: " + "; ".join(problems[:5]))
    order = sorted(members)
    rewards = torch.tensor([[rollouts[i].reward for i in members[g]] for g in order], dtype=torch.float32)
    out = [0.0] * len(rollouts)
    for g, row in zip(order, estimator(rewards).tolist()):
        for i, advantage in zip(members[g], row):
            out[i] = advantage
    return out

"""The GRPO reward curve against the weights version (optimizer updates applied): the training rollouts'
mean reward (± one std) at the version that sampled them, and the mean reward over the fixed evaluation set
where it was measured."""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from reasonrank.reporting import save_figure


def plot_reward_curve(versions: Sequence[int], reward_mean: Sequence[float], reward_std: Sequence[float],
                      eval_versions: Sequence[int], eval_reward: Sequence[float], path: str | Path,
                      title: str = "GRPO reward") -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.0, 3.4))
    if versions:
        lo = [m - s for m, s in zip(reward_mean, reward_std)]
        hi = [m + s for m, s in zip(reward_mean, reward_std)]
        ax.fill_between(versions, lo, hi, alpha=0.2, label="rollouts ± std")
        ax.plot(versions, reward_mean, label="rollouts (mean)")
    if eval_versions:
        ax.plot(eval_versions, eval_reward, "o-", label="fixed eval set (mean)")
    ax.set_xlabel("weights version (updates applied)")
    ax.set_ylabel("multi-view reward")
    ax.set_title(title)
    ax.legend(fontsize="small")
    return save_figure(fig, path)

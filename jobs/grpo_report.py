"""What a GRPO run reports under its output folder: `metrics.jsonl` (one line per step), `evals.jsonl`,
`reward_curve.png` and `summary.json`; and the rollout statistics each step and evaluation logs."""
from __future__ import annotations

import json
import math
import os
import statistics
from dataclasses import dataclass
from typing import Any

from reasonrank import storage
from reasonrank.rl.curves import plot_reward_curve
from reasonrank.rl.rollout import Rollout


def rollout_metrics(rollouts: list[Rollout]) -> dict[str, float]:
    """Reward mean/std, the share of well-formed and malformed answers, the window metrics' means, response length,
    the share cut by the token budget and the number of prompts whose passages were cut to fit."""
    rewards = [r.reward for r in rollouts]
    n = len(rollouts)

    def mean_term(name: str) -> float:
        return sum(float(r.reward_terms.get(name, 0.0)) for r in rollouts) / n

    return {
        "reward_mean": statistics.fmean(rewards),
        "reward_std": statistics.pstdev(rewards),
        "well_formed": sum(r.reward_terms.get("outcome") == "scored" for r in rollouts) / n,
        "malformed": sum(r.reward_terms.get("outcome") == "malformed" for r in rollouts) / n,
        "ndcg": mean_term("ndcg"), "recall": mean_term("recall"), "rbo": mean_term("rbo"),
        "response_tokens": statistics.fmean(len(r.response_ids) for r in rollouts),
        "truncated": sum(r.finish_reason == "length" for r in rollouts) / n,
        "prompts_cut": len({r.sample_id for r in rollouts if r.passages_cut_to is not None}),
    }


@dataclass(frozen=True)
class RewardChange:
    """The fixed evaluation set's mean reward at the first and the last evaluation of a run, each with its
    standard error over the prompts, and their difference paired over the prompts (95% CI)."""

    before: float
    before_se: float
    after: float
    after_se: float
    difference: float
    se: float
    ci_low: float
    ci_high: float


def reward_change(evals: list[dict[str, Any]]) -> RewardChange:
    """The change from the first to the last evaluation in `evals` (evals.jsonl's records)."""
    from reasonrank.significance import paired_difference

    first, last = evals[0]["prompt_rewards"], evals[-1]["prompt_rewards"]

    def se(values: list[float]) -> float:
        return statistics.stdev(values) / math.sqrt(len(values))

    d = paired_difference(first, last, "reward")
    return RewardChange(d.baseline, se(list(first.values())), d.system, se(list(last.values())), d.difference,
                        se([last[p] - first[p] for p in first]), d.ci_low, d.ci_high)


def write(output_dir: str, model: str, steps: int, history: list[dict[str, Any]], evals: list[dict[str, Any]],
          rollout_restarts: int, final_model: str | None, resumed_from: int | None = None) -> dict[str, Any]:
    """Write the run's reports after `steps` steps; returns the summary."""
    storage.write_jsonl_atomic(storage.join(output_dir, "metrics.jsonl"), history)
    storage.write_jsonl_atomic(storage.join(output_dir, "evals.jsonl"), evals)
    with storage.writing(storage.join(output_dir, "reward_curve.png")) as png:
        plot_reward_curve([m["weights_version"] for m in history], [m["reward_mean"] for m in history],
                          [m["reward_std"] for m in history], [e["step"] for e in evals],
                          [e["reward_mean"] for e in evals], png, f"GRPO · {os.path.basename(model.rstrip('/'))}")
    summary = {"steps": steps, "resumed_from": resumed_from, "model": model,
               "eval_before": evals[0] if evals else None,
               "eval_after": evals[-1] if evals else None,
               "rollout_restarts": rollout_restarts,
               "final_model": final_model}
    storage.write_text_atomic(storage.join(output_dir, "summary.json"), json.dumps(summary, indent=2))
    return summary

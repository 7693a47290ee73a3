"""The per-step reward of iterative elimination (R1-Ranker's IRanker; Feng et al., 2025, "R1-Ranker:
Teaching LLM Rankers to Reason").

One step shows the remaining candidates and the model names the least relevant one. Its reward is a
content term plus a format term:

    content: the named candidate is not relevant      -> +1   (a right elimination)
             the named candidate is relevant          ->  0   (a relevant one was thrown away)
             no candidate named (see parse_elimination) -> -0.5
    format:  the whole response is `<think>…</think>` then `<answer>…</answer>`, each tag exactly
             once, nothing before or after            ->  0
             otherwise                                -> -1

The values follow the paper and R1-Ranker's released reward (verl/utils/reward_score/exclusion_reward.py in
ulab-uiuc/R1-Ranker: `exclude_reward`, `format_reward` 0 / -1; its `tag_count_reward` is folded into the format
term). All five values are configurable. Where this differs from the release (it scores prompt + response and
reads candidate names from the first answer line): docs/r1-ranker.md.
"""
from __future__ import annotations

from collections.abc import Collection, Sequence

from reasonrank.config import Strict
from reasonrank.elimination import parse_elimination
from reasonrank.parsing import has_exact_format
from reasonrank.task_reward import TaskReward


class EliminationRewardWeights(Strict):
    removed_non_relevant: float = 1.0
    removed_relevant: float = 0.0
    no_candidate: float = -0.5
    format_ok: float = 0.0
    format_bad: float = -1.0


def elimination_step_terms(response: str, remaining_docids: Sequence[str], relevant_docids: Collection[str],
                           weights: EliminationRewardWeights = EliminationRewardWeights()) -> TaskReward:
    """The reward of one elimination step over `remaining_docids` (as shown, [1] first), with its `content`
    and `format` terms. Outcome: "malformed" (format term bad), else "no_candidate", else "scored"."""
    parsed = parse_elimination(response, len(remaining_docids))
    if not parsed.named:
        content = weights.no_candidate
    elif remaining_docids[parsed.index] in set(relevant_docids):
        content = weights.removed_relevant
    else:
        content = weights.removed_non_relevant
    well_formatted = has_exact_format(response)
    form = weights.format_ok if well_formatted else weights.format_bad
    outcome = "malformed" if not well_formatted else "scored" if parsed.named else "no_candidate"
    return TaskReward(content + form, outcome, {"content": content, "format": form})


def elimination_step_reward(response: str, remaining_docids: Sequence[str], relevant_docids: Collection[str],
                            weights: EliminationRewardWeights = EliminationRewardWeights()) -> float:
    """The scalar reward of one elimination step (see `elimination_step_terms`)."""
    return elimination_step_terms(response, remaining_docids, relevant_docids, weights).reward

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

The format values follow R1-Ranker's reference implementation (structure 0 / -1; its tag-count check is
folded into the same term). All five values are configurable.
"""
from __future__ import annotations

from collections.abc import Collection, Sequence

from reasonrank.config import Strict
from reasonrank.elimination import parse_elimination
from reasonrank.parsing import THINK_THEN_ANSWER

_TAGS = ("<think>", "</think>", "<answer>", "</answer>")


class EliminationRewardWeights(Strict):
    removed_non_relevant: float = 1.0
    removed_relevant: float = 0.0
    no_candidate: float = -0.5
    format_ok: float = 0.0
    format_bad: float = -1.0


def has_elimination_format(response: str) -> bool:
    """`<think>…</think><answer>…</answer>` and nothing else around it, each tag exactly once."""
    return (THINK_THEN_ANSWER.fullmatch(response.strip()) is not None
            and all(response.count(tag) == 1 for tag in _TAGS))


def elimination_step_reward(response: str, remaining_docids: Sequence[str], relevant_docids: Collection[str],
                            weights: EliminationRewardWeights = EliminationRewardWeights()) -> float:
    """The reward of one elimination step over `remaining_docids` (as shown, [1] first)."""
    parsed = parse_elimination(response, len(remaining_docids))
    if not parsed.named:
        content = weights.no_candidate
    elif remaining_docids[parsed.index] in set(relevant_docids):
        content = weights.removed_relevant
    else:
        content = weights.removed_non_relevant
    return content + (weights.format_ok if has_elimination_format(response) else weights.format_bad)

"""The reward of a one-shot list (R1-Ranker's DRanker; Feng et al., 2025, "R1-Ranker: Teaching LLM Rankers to
Reason"): the whole candidate list ranked in one answer, one positive (`gt`) among the candidates.

    no answer                                               -> content -1
    otherwise  overlap + ndcg, where
        overlap = |distinct candidates named| / n - 1         (0 when every candidate is listed, down to -1)
        ndcg    = NDCG of the one positive in the named order (1 / log2(rank + 1); 0 when it is not named)
    plus format: `<think>…</think><answer>…</answer>`, each tag once, nothing around it -> 0, otherwise -1

As the released reward (verl/utils/reward_score/ranking_reward.py in ulab-uiuc/R1-Ranker: `format_rank_reward`,
`rec_reward` with `calculate_ndcg`, `format_reward` and `tag_count_reward`, the last two folded into one format
term here), except that candidates are named by their `[k]` identifiers; docs/r1-ranker.md says where else
this differs from the release.
"""
from __future__ import annotations

from collections.abc import Sequence

from reasonrank.config import Strict
from reasonrank.metrics import ndcg_at_k
from reasonrank.parsing import answer_ids, extract_answer, has_exact_format
from reasonrank.task_reward import TaskReward


class ListRewardWeights(Strict):
    no_answer: float = -1.0
    format_ok: float = 0.0
    format_bad: float = -1.0


def named_candidates(answer: str, num_candidates: int) -> list[int]:
    """0-based indices of the candidates an answer names, in order, each once; out-of-range ids dropped
    (unlike `parse_ranking`, the ones never named are NOT appended: the overlap term counts them)."""
    seen: dict[int, None] = {}
    for k in answer_ids(answer):
        if 1 <= k <= num_candidates:
            seen.setdefault(k - 1)
    return list(seen)


def list_reward_terms(response: str, docids: Sequence[str], positive: str,
                      weights: ListRewardWeights = ListRewardWeights()) -> TaskReward:
    """The reward of `response` ranking the candidates `docids` (as shown, [1] first) with one `positive`.
    Outcome: "scored" when the format term is good, else "malformed"."""
    well_formatted = has_exact_format(response)
    form = weights.format_ok if well_formatted else weights.format_bad
    answer = extract_answer(response)
    if answer is None:
        return TaskReward(weights.no_answer + form, "malformed", {"overlap": 0.0, "ndcg": 0.0, "format": form})
    named = [docids[i] for i in named_candidates(answer, len(docids))]
    overlap = len(named) / len(docids) - 1.0
    ndcg = ndcg_at_k(named, {positive: 1}, len(docids))
    return TaskReward(overlap + ndcg + form, "scored" if well_formatted else "malformed",
                      {"overlap": overlap, "ndcg": ndcg, "format": form})

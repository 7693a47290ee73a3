"""Ranking-bench's evaluation of iterative elimination (R1-Ranker; Feng et al., 2025): greedy elimination
until one candidate is left; the positive's rank is N - (eliminations up to and including it) + 1, or 1 when it
is never eliminated; MRR, NDCG@k and Hit@k per task (`task_name`), over pytrec_eval (`reasonrank.metrics`).

`IterativeElimination` (reasonrank/strategies/iterative_elimination.py) returns the survivor first, then the
eliminated candidates latest first, which puts the positive exactly at that rank; `gt_rank` states the rule.
"""
from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence

from reasonrank.metrics import per_query_metrics

HIT_KS = (1, 5, 10)


def gt_rank(num_candidates: int, eliminated: Sequence[str], gt: str) -> int:
    """The positive's rank after the eliminations `eliminated` (in order) among `num_candidates`."""
    if gt not in eliminated:
        return 1
    return num_candidates - (eliminated.index(gt) + 1) + 1


def per_task_metrics(rankings: Mapping[str, Sequence[str]], qrels: Mapping[str, Mapping[str, int]],
                     task_of: Mapping[str, str], ks: Sequence[int] = HIT_KS) -> dict[str, dict[str, float]]:
    """Per task name: the mean `mrr`, `ndcg@k` and `hit@k` (one positive: Hit@k is Recall@k) of the queries'
    final `rankings` (qid → docids, best first), and `queries`, how many were averaged."""
    depth = max((len(r) for r in rankings.values()), default=1)
    run = {q: {d: float(len(r) - i) for i, d in enumerate(r)} for q, r in rankings.items()}
    per_query = per_query_metrics(run, qrels, ndcg_ks=ks, recall_ks=ks, mrr_k=depth)
    by_task: dict[str, list[dict[str, float]]] = defaultdict(list)
    for q, values in per_query.items():
        by_task[task_of[q]].append({"mrr": values[f"mrr@{depth}"],
                                    **{f"ndcg@{k}": values[f"ndcg@{k}"] for k in ks},
                                    **{f"hit@{k}": values[f"recall@{k}"] for k in ks}})
    return {task: {"queries": len(rows), **{name: sum(r[name] for r in rows) / len(rows) for name in rows[0]}}
            for task, rows in sorted(by_task.items())}

"""Ranking metrics with trec_eval semantics.

Per-ranking functions (used inside rewards, called millions of times) are plain Python and agree with
trec_eval, which the tests check against pytrec_eval: gain is the graded relevance itself (linear, as
trec_eval's ndcg_cut), log2(rank + 1) discount, relevance <= 0 counts as not relevant, a query with no
relevant document scores 0. `evaluate_run` over whole runs uses pytrec_eval itself.
"""
from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence

import numpy as np
import pytrec_eval
import rbo

log = logging.getLogger(__name__)


def _dcg(gains: Sequence[float]) -> float:
    return sum(g / math.log2(i + 2) for i, g in enumerate(gains))


def ndcg_at_k(ranking: Sequence[str], qrels: Mapping[str, int], k: int) -> float:
    """NDCG@k of `ranking` (docids, best first) against graded `qrels` (trec_eval `ndcg_cut.k`)."""
    ideal = _dcg(sorted((r for r in qrels.values() if r > 0), reverse=True)[:k])
    if ideal == 0:
        return 0.0
    return _dcg([max(qrels.get(d, 0), 0) for d in ranking[:k]]) / ideal


def recall_at_k(ranking: Sequence[str], qrels: Mapping[str, int], k: int) -> float:
    """Share of the relevant documents found in the top k (trec_eval `recall.k`)."""
    relevant = {d for d, r in qrels.items() if r > 0}
    if not relevant:
        return 0.0
    return len(relevant.intersection(ranking[:k])) / len(relevant)


def mrr_at_k(ranking: Sequence[str], qrels: Mapping[str, int], k: int) -> float:
    """Reciprocal rank of the first relevant document within the top k, else 0 (trec_eval `recip_rank`
    over the run cut at k)."""
    for rank, d in enumerate(ranking[:k], start=1):
        if qrels.get(d, 0) > 0:
            return 1.0 / rank
    return 0.0


def rbo_score(pred: Sequence[str], label: Sequence[str], p: float = 1.0) -> float:
    """Rank-biased overlap as ReasonRank computes it: `rbo.RankingSimilarity(pred, label).rbo(p=p)`;
    with the default p = 1.0 this is the average overlap of the two prefixes up to the shorter length."""
    return float(rbo.RankingSimilarity(list(pred), list(label)).rbo(p=p))


def _top(scores: Mapping[str, float], k: int) -> dict[str, float]:
    """The k best of one query's run in trec_eval's order: score (a 32-bit float there) descending, ties
    by docid descending."""
    return dict(sorted(scores.items(), key=lambda kv: (np.float32(kv[1]), kv[0]), reverse=True)[:k])


def per_query_metrics(run: Mapping[str, Mapping[str, float]], qrels: Mapping[str, Mapping[str, int]],
                      ndcg_ks: Sequence[int] = (1, 5, 10), recall_ks: Sequence[int] = (10, 100),
                      mrr_k: int = 10) -> dict[str, dict[str, float]]:
    """ndcg@k, recall@k and mrr@k of each query that has qrels and a ranking in `run` (qid -> docid ->
    score), as trec_eval computes them per query."""
    judged = {q: {d: int(r) for d, r in rels.items()} for q, rels in qrels.items()}
    ranked = {q: {d: float(s) for d, s in scores.items()} for q, scores in run.items() if q in judged and scores}
    names = {f"ndcg_cut_{k}": f"ndcg@{k}" for k in ndcg_ks} | {f"recall_{k}": f"recall@{k}" for k in recall_ks}
    measures = {f"ndcg_cut.{','.join(map(str, ndcg_ks))}", f"recall.{','.join(map(str, recall_ks))}"}
    per_query = {q: {names[m]: v for m, v in values.items() if m in names}
                 for q, values in pytrec_eval.RelevanceEvaluator(judged, measures).evaluate(ranked).items()}
    cut = {q: _top(scores, mrr_k) for q, scores in ranked.items()}
    for q, values in pytrec_eval.RelevanceEvaluator(judged, {"recip_rank"}).evaluate(cut).items():
        per_query[q][f"mrr@{mrr_k}"] = values["recip_rank"]
    return per_query


def evaluate_run(run: Mapping[str, Mapping[str, float]], qrels: Mapping[str, Mapping[str, int]],
                 ndcg_ks: Sequence[int] = (1, 5, 10), recall_ks: Sequence[int] = (10, 100),
                 mrr_k: int = 10, missing_as_zero: bool = False) -> dict[str, float]:
    """Mean ndcg@k, recall@k and mrr@k of `run` (qid -> docid -> score) over the queries that have qrels.

    As trec_eval without `-c` (and BRIGHT's own evaluation), a query with qrels but no ranking in the run
    is left out of the means; the number left out is logged. `missing_as_zero=True` counts such queries
    as 0 instead (trec_eval `-c`). Queries with qrels but no relevant document count, and score 0.
    """
    per_query = per_query_metrics(run, qrels, ndcg_ks, recall_ks, mrr_k)
    missing = len(qrels) - len(per_query)
    if missing:
        log.warning("%d of %d judged queries have no ranking in the run; %s", missing, len(qrels),
                    "counted as 0" if missing_as_zero else "left out of the means (as trec_eval without -c)")
    names = [*(f"ndcg@{k}" for k in ndcg_ks), *(f"recall@{k}" for k in recall_ks), f"mrr@{mrr_k}"]
    denominator = len(qrels) if missing_as_zero else len(per_query)
    return {name: (sum(v[name] for v in per_query.values()) / denominator if denominator else 0.0)
            for name in names}

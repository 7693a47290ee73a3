"""Metrics agree with trec_eval (pytrec_eval) and RBO with hand-computed values."""
from __future__ import annotations

import math
import random

import pytest
import pytrec_eval

from reasonrank.metrics import evaluate_run, mrr_at_k, ndcg_at_k, per_query_metrics, rbo_score, recall_at_k


def _random_case(rng: random.Random) -> tuple[list[str], dict[str, int]]:
    """A ranking (ties-free scores implied by its order) and graded qrels that may judge unranked
    documents, contain negative grades or no relevant document at all."""
    pool = [f"d{i}" for i in range(rng.randint(1, 150))]
    ranking = rng.sample(pool, rng.randint(1, len(pool)))
    grades = [-1, 0, 0, 1, 1, 2, 3] if rng.random() > 0.1 else [0, -1]
    judged = rng.sample(pool, rng.randint(1, len(pool)))
    return ranking, {d: rng.choice(grades) for d in judged}


def test_per_ranking_metrics_agree_with_pytrec_eval_on_random_cases():
    rng = random.Random(7)
    cases = {f"q{i}": _random_case(rng) for i in range(1200)}
    qrels = {q: rels for q, (_, rels) in cases.items()}
    run = {q: {d: float(len(ranking) - r) for r, d in enumerate(ranking)} for q, (ranking, _) in cases.items()}
    top10 = {q: {d: float(10 - r) for r, d in enumerate(ranking[:10])} for q, (ranking, _) in cases.items()}
    full = pytrec_eval.RelevanceEvaluator(qrels, {"ndcg_cut.1,5,10,100", "recall.5,10,100"}).evaluate(run)
    cut = pytrec_eval.RelevanceEvaluator(qrels, {"recip_rank"}).evaluate(top10)
    assert len(full) == len(cases)
    no_relevant = 0
    for q, (ranking, rels) in cases.items():
        no_relevant += not any(r > 0 for r in rels.values())
        for k in (1, 5, 10, 100):
            assert ndcg_at_k(ranking, rels, k) == pytest.approx(full[q][f"ndcg_cut_{k}"], abs=1e-9), (q, k)
        for k in (5, 10, 100):
            assert recall_at_k(ranking, rels, k) == pytest.approx(full[q][f"recall_{k}"], abs=1e-9), (q, k)
        assert mrr_at_k(ranking, rels, 10) == pytest.approx(cut[q]["recip_rank"], abs=1e-9), q
    assert no_relevant > 50  # the random cases did exercise queries without relevant documents


def test_ndcg_uses_linear_gains_by_hand():
    # ranking b, x, a with rel(a)=2, rel(b)=1: DCG = 1/log2(2) + 0 + 2/log2(4) = 2; IDCG = 2 + 1/log2(3)
    assert ndcg_at_k(["b", "x", "a"], {"a": 2, "b": 1}, 10) == pytest.approx(2 / (2 + 1 / math.log2(3)))
    assert recall_at_k(["b", "x", "a"], {"a": 2, "b": 1, "c": 1}, 2) == pytest.approx(1 / 3)
    assert mrr_at_k(["x", "y", "a"], {"a": 1}, 2) == 0.0
    assert mrr_at_k(["x", "y", "a"], {"a": 1}, 3) == pytest.approx(1 / 3)


def test_rbo_matches_hand_computed_values():
    # p = 1: average overlap of the prefixes. [a b c] vs [a c b]: overlaps 1/1, 1/2, 3/3 -> (1 + .5 + 1) / 3
    assert rbo_score(["a", "b", "c"], ["a", "c", "b"]) == pytest.approx(2.5 / 3)
    # [a b c d] vs [d c b a]: 0/1, 0/2, 2/3, 4/4 -> (0 + 0 + 2/3 + 1) / 4
    assert rbo_score(["a", "b", "c", "d"], ["d", "c", "b", "a"]) == pytest.approx((2 / 3 + 1) / 4)
    assert rbo_score(["a", "b"], ["a", "b"]) == pytest.approx(1.0)
    # p = 0.5: sum of (1 - p) p^(d-1) * overlap_d = .5 * 1 + .25 * .5 + .125 * 1
    assert rbo_score(["a", "b", "c"], ["a", "c", "b"], p=0.5) == pytest.approx(0.75)
    # different lengths: compared to the shorter depth only
    assert rbo_score(["a", "b", "c"], ["b"]) == 0.0


def test_evaluate_run_is_the_mean_over_judged_queries():
    qrels = {"q1": {"a": 1, "b": 2}, "q2": {"c": 1}, "q3": {"z": 1}, "q4": {"a": 0}}
    run = {"q1": {"b": 3.0, "x": 2.0, "a": 1.0}, "q2": {"x": 2.0, "c": 1.0}, "q4": {"a": 1.0},
           "stray": {"a": 1.0}}
    per_query = {"q1": ["b", "x", "a"], "q2": ["x", "c"], "q4": ["a"]}
    metrics = evaluate_run(run, qrels)
    assert list(metrics) == ["ndcg@1", "ndcg@5", "ndcg@10", "recall@10", "recall@100", "mrr@10"]
    # q3 has qrels but no ranking: left out (trec_eval without -c); q4 has no relevant document: scores 0
    expected_ndcg10 = sum(ndcg_at_k(r, qrels[q], 10) for q, r in per_query.items()) / 3
    assert metrics["ndcg@10"] == pytest.approx(expected_ndcg10)
    assert metrics["mrr@10"] == pytest.approx((1 + 0.5 + 0) / 3)
    assert metrics["recall@10"] == pytest.approx((1 + 1 + 0) / 3)
    with_zero = evaluate_run(run, qrels, missing_as_zero=True)
    assert with_zero["mrr@10"] == pytest.approx((1 + 0.5 + 0 + 0) / 4)

    each = per_query_metrics(run, qrels)  # what the means are made of, and what paired comparisons use
    assert set(each) == {"q1", "q2", "q4"}
    assert {q: v["mrr@10"] for q, v in each.items()} == {"q1": 1.0, "q2": 0.5, "q4": 0.0}
    assert each["q1"]["ndcg@10"] == pytest.approx(ndcg_at_k(per_query["q1"], qrels["q1"], 10))


def test_evaluate_run_cuts_mrr_at_k_in_trec_eval_order():
    # the relevant document is 11th by score although listed first: MRR@10 must not see it
    scores = {"rel": 0.5} | {f"d{i}": 10.0 - i for i in range(10)}
    assert evaluate_run({"q": scores}, {"q": {"rel": 1}})["mrr@10"] == 0.0
    assert evaluate_run({"q": scores}, {"q": {"rel": 1}}, mrr_k=11)["mrr@11"] == pytest.approx(1 / 11)


def test_evaluate_run_cuts_mrr_at_k_where_trec_eval_sees_ties():
    # 1.0 and 1.0 + 1e-12 are equal as trec_eval's 32-bit scores: the tie goes to the larger docid, "z"
    scores = {"a": 1.0 + 1e-12, "z": 1.0}
    assert evaluate_run({"q": scores}, {"q": {"a": 1}}, mrr_k=1)["mrr@1"] == 0.0
    assert evaluate_run({"q": scores}, {"q": {"a": 1}}, mrr_k=2)["mrr@2"] == pytest.approx(0.5)

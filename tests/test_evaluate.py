"""The evaluate job compared with a baseline run, query by query.

In process on the session's Ray cluster, with the tiny model on the transformers engine: what is tested is
the job's comparison, and vLLM's start would double the time (the job on vLLM is `make demo`'s).
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from jobs.evaluate import EvaluateConfig, evaluate
from reasonrank.config import load_config
from reasonrank.data.trec import write_run
from reasonrank.metrics import evaluate_run

REPO = Path(__file__).resolve().parent.parent
QUERIES = 6


def _config(demo_data, model_dir, out, baseline) -> EvaluateConfig:
    return load_config(REPO / "configs" / "evaluate-tiny.yaml", EvaluateConfig, {
        "data.demo_dir": str(demo_data.root), "data.limit": QUERIES, "engine.model": str(model_dir),
        "engine.backend": "transformers", "sampling.max_new_tokens": 16, "build_tiny_model": False,
        "output_dir": str(out), "baseline_run": str(baseline)})


def _oracle(cfg: EvaluateConfig) -> dict[str, list[str]]:
    """Each query's candidates with its relevant ones first: a baseline the untrained model cannot match."""
    dataset = cfg.data.load()
    ranked = {}
    for request in dataset.requests(cfg.data.first_stage_depth):
        qrels = dataset.qrels[request.query.qid]
        docids = [c.docid for c in request.candidates]
        ranked[request.query.qid] = sorted(docids, key=lambda d: -qrels.get(d, 0))
    return ranked


def test_evaluate_compares_the_reranked_run_with_a_baseline_run(ray_cluster, demo_data, tiny_model_dir, tmp_path):
    baseline = tmp_path / "oracle.trec"
    cfg = _config(demo_data, tiny_model_dir, tmp_path / "eval", baseline)
    oracle = _oracle(cfg)
    write_run(baseline, oracle)
    summary = evaluate(cfg)

    vs = summary["vs_baseline"]
    assert vs["run"] == str(baseline)
    ndcg = vs["ndcg@10"]
    scores = {q: {d: float(len(r) - i) for i, d in enumerate(r)} for q, r in oracle.items()}
    assert ndcg["queries"] == QUERIES
    assert ndcg["baseline"] == pytest.approx(evaluate_run(scores, cfg.data.load().qrels)["ndcg@10"])
    assert ndcg["system"] == pytest.approx(summary["after"]["ndcg@10"])
    # the untrained model leaves the BM25 order, below the oracle on every query that BM25 gets wrong
    assert ndcg["difference"] < 0 and ndcg["ci_high"] <= 0
    assert json.loads((tmp_path / "eval" / "metrics.json").read_text())["vs_baseline"] == vs
    cost = summary["per_query"]  # windows of 10, step 5, over 20 candidates: 3 windows, one after another
    assert (cost["llm_calls"], cost["sequential_rounds"], cost["max_sequential_rounds"]) == (3, 3, 3)
    assert cost["prompt_tokens"] > cost["completion_tokens"] > 0


def test_a_baseline_run_missing_a_query_is_refused_before_any_reranking(demo_data, tiny_model_dir, tmp_path):
    baseline = tmp_path / "partial.trec"
    cfg = _config(demo_data, tiny_model_dir, tmp_path / "eval", baseline)
    oracle = _oracle(cfg)
    dropped = sorted(oracle)[0]
    write_run(baseline, {q: r for q, r in oracle.items() if q != dropped})
    with pytest.raises(ValueError, match=rf"has no ranking for 1 of the {QUERIES} queries.*{dropped}"):
        evaluate(cfg)
    assert not (tmp_path / "eval").exists()

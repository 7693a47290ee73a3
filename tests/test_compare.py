"""`reasonrank compare RUN_A RUN_B --qrels …`: the paired comparison of any two TREC runs."""
from __future__ import annotations

import re

from typer.testing import CliRunner

from jobs.cli import app
from reasonrank.data.trec import write_qrels, write_run
from reasonrank.significance import compare_runs

QUERIES = [f"q{i}" for i in range(30)]
DOCS = [f"d{j}" for j in range(10)]


def _runs(tmp_path):
    """Each query's one relevant document is d{i % 10}: run B ranks it first, run A last."""
    qrels = {q: {DOCS[i % 10]: 1} for i, q in enumerate(QUERIES)}
    worse = {q: [d for d in DOCS if d != DOCS[i % 10]] + [DOCS[i % 10]] for i, q in enumerate(QUERIES)}
    better = {q: [DOCS[i % 10]] + [d for d in DOCS if d != DOCS[i % 10]] for i, q in enumerate(QUERIES)}
    write_qrels(tmp_path / "qrels.txt", qrels)
    write_run(tmp_path / "a.trec", worse, tag="a")
    write_run(tmp_path / "b.trec", better, tag="b")
    return tmp_path / "a.trec", tmp_path / "b.trec", tmp_path / "qrels.txt"


def test_the_better_run_is_found_better(tmp_path):
    a, b, qrels = _runs(tmp_path)
    result = CliRunner().invoke(app, ["compare", str(a), str(b), "--qrels", str(qrels),
                                      "--metric", "ndcg@10", "--metric", "mrr@5"])
    assert result.exit_code == 0, result.output
    # ndcg@10: A has its relevant document at rank 10, 1/log2(11); B at rank 1. mrr@5: A never in the top 5.
    ndcg = re.search(r"ndcg@10: A ([0-9.]+), B ([0-9.]+); ndcg@10 \+([0-9.]+) .*p < 0\.001, 30 queries", result.output)
    assert ndcg and ndcg.groups() == ("0.2891", "1.0000", "0.7109"), result.output
    assert re.search(r"mrr@5: A 0\.0000, B 1\.0000; mrr@5 \+1\.0000", result.output), result.output


def test_swapped_runs_give_the_opposite_difference(tmp_path):
    from reasonrank.data.trec import read_qrels, read_run

    a, b, qrels = (str(p) for p in _runs(tmp_path))
    forward = compare_runs(read_run(a), read_run(b), read_qrels(qrels), ["recall@1"])["recall@1"]
    backward = compare_runs(read_run(b), read_run(a), read_qrels(qrels), ["recall@1"])["recall@1"]
    assert forward.difference == 1.0 == -backward.difference
    assert forward.p_value < 0.001 and forward.ci_low == forward.ci_high == 1.0


def test_bad_metric_and_runs_over_other_queries_are_refused(tmp_path):
    a, b, qrels = _runs(tmp_path)
    result = CliRunner().invoke(app, ["compare", str(a), str(b), "--qrels", str(qrels), "--metric", "map"])
    assert result.exit_code == 2 and "unknown metric 'map'" in result.output
    write_run(tmp_path / "short.trec", {"q0": DOCS}, tag="s")
    result = CliRunner().invoke(app, ["compare", str(a), str(tmp_path / "short.trec"), "--qrels", str(qrels)])
    assert result.exit_code == 2 and "scored by only one ranker" in result.output

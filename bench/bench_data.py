"""Costs of the data path: reward, metrics, BM25 and the demo generator.

    python bench/bench_data.py [--docs 50000] [--queries 100]

GRPO scores every rollout with the multi-view reward and the teacher filter scores every sample with
NDCG, so those run in plain Python; this prints their cost per call next to pytrec_eval's for the same
NDCG@10 (the ratio says why the per-ranking metrics are not computed through pytrec_eval), plus
evaluate_run over a 1,000-query run, BM25 over a BRIGHT-sized corpus and the demo generator. Writes the
table as JSON and a plot under outputs/bench/.
"""
from __future__ import annotations

import argparse
import json
import random
import tempfile
import time
from pathlib import Path


def _per_call(fn, repeat: int) -> float:
    start = time.perf_counter()
    for _ in range(repeat):
        fn()
    return (time.perf_counter() - start) / repeat


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=50_000, help="BM25 corpus size (BRIGHT biology: 57k)")
    parser.add_argument("--queries", type=int, default=100)
    parser.add_argument("--out", default="outputs/bench")
    args = parser.parse_args()

    import pytrec_eval

    from reasonrank.data.bm25 import bm25_run
    from reasonrank.data.demo import write_demo_dataset
    from reasonrank.metrics import evaluate_run, ndcg_at_k
    from reasonrank.parsing import format_answer
    from reasonrank.reward import reward_breakdown

    rng = random.Random(0)
    window = [f"d{i}" for i in range(20)]
    relevant, teacher = window[3:6], rng.sample(window, 20)
    answer = format_answer(rng.sample(range(20), 20))
    response = f"<think>{'reasoning ' * 300}</think><answer>{answer}</answer>"
    qrels = {d: 1 for d in relevant}
    ranking = rng.sample(window, 20)
    rows = {
        "reward_breakdown, window 20 (ms/call)": 1e3 * _per_call(
            lambda: reward_breakdown(response, window, relevant, teacher), 2000),
        "ndcg_at_k@10 (ms/call)": 1e3 * _per_call(lambda: ndcg_at_k(ranking, qrels, 10), 5000),
        "pytrec_eval ndcg_cut.10, one query (ms/call)": 1e3 * _per_call(
            lambda: pytrec_eval.RelevanceEvaluator({"q": qrels}, {"ndcg_cut.10"}).evaluate(
                {"q": {d: float(20 - i) for i, d in enumerate(ranking)}}), 2000),
    }
    rows["pytrec_eval / ndcg_at_k (ratio)"] = (rows["pytrec_eval ndcg_cut.10, one query (ms/call)"]
                                               / rows["ndcg_at_k@10 (ms/call)"])
    run = {f"q{q}": {f"d{i}": rng.random() for i in range(100)} for q in range(1000)}
    judged = {q: {f"d{i}": rng.choice((0, 1, 2)) for i in rng.sample(range(150), 10)} for q in run}
    rows["evaluate_run, 1000 queries x 100 docs (s)"] = _per_call(lambda: evaluate_run(run, judged), 3)
    with tempfile.TemporaryDirectory() as tmp:
        rows["write_demo_dataset (s)"] = _per_call(lambda: write_demo_dataset(Path(tmp) / "demo"), 3)
    vocab = [f"w{i}" for i in range(20_000)]
    corpus = {f"d{i}": " ".join(rng.choices(vocab, k=80)) for i in range(args.docs)}
    queries = {f"q{i}": " ".join(rng.choices(vocab, k=12)) for i in range(args.queries)}
    rows[f"bm25_run, {args.docs} docs x 80 words, {args.queries} queries, top 100 (s)"] = _per_call(
        lambda: bm25_run(queries, corpus, k=100), 1)

    width = max(map(len, rows))
    print(f"{'measure':<{width}}  value")
    for name, value in rows.items():
        print(f"{name:<{width}}  {value:.4g}")

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench_data.json").write_text(json.dumps(rows, indent=2))
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    per_call = {k: v for k, v in rows.items() if k.endswith("(ms/call)")}
    fig, ax = plt.subplots(figsize=(8, 2.5))
    ax.barh(list(per_call), list(per_call.values()))
    ax.set_xlabel("ms per call")
    ax.set_title("reward and NDCG cost per call")
    fig.tight_layout()
    fig.savefig(out / "bench_data.png", dpi=120)
    print(f"wrote {out / 'bench_data.json'} and {out / 'bench_data.png'}")


if __name__ == "__main__":
    main()

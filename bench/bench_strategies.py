"""Strategies and reasoning budgets at interactive latency: what each costs and what it ranks, on vLLM.

    python bench/bench_strategies.py [--model outputs/demo-pipeline/sft/final] [--queries 250] [--quick]
    python bench/bench_strategies.py --tiny --quick     # a smoke run on the untrained tiny model

On the demo's held-out queries, over a BM25 run deep enough that the sliding window (windows of 10, step 5,
as the demo model is trained) needs 9 windows: the top 50 of BM25 over the whole demo corpus (the demo's
own run has 20 candidates per query), for the sliding window, the first stage's top window alone (a reference:
what ranking below it adds), top-down partitioning and parallel blocks (with and without the top window ranked
again), each with reasoning as trained, under each budget and without reasoning. Per row: LLM calls,
sequential rounds, prompt and completion tokens per query; p50 latency with one query at a time (over the
first `--latency-queries`) and with 16 at once (over all); NDCG@10 and its paired difference from the sliding
window with reasoning (95% bootstrap CI, paired randomisation p-value, `reasonrank.significance`). Greedy
decoding, so the rankings do not depend on the concurrency. The prefix cache is emptied before each row. Also
how many relevant passages the first stage leaves in its top window and below it (what depth can gain).

First, without a model, the paper's setting: calls and sequential rounds for the top 100 with windows of 20 (step 10,
pivot at rank 10), each strategy driven by a scripted model that ranks windows by known grades. Writes the
table as JSON under `--out`.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import random
import re
import statistics
import time
from pathlib import Path

CONCURRENCY = 16
_PASSAGE = re.compile(r"^\[(\d+)\] (.*)$", re.MULTILINE)


def strategy_grid(window: int, step: int, depth: int, passage_tokens: int | None,
                  cutoff: int | None = None) -> list[tuple[str, dict]]:
    """(label, strategy config keys) of every strategy measured; the sliding window first (the baseline)."""
    shared = {"window_size": window, "depth": depth, "passage_max_tokens": passage_tokens}
    return [
        ("sliding_window", {"name": "sliding_window", "step": step, **shared}),
        ("top_window", {"name": "sliding_window", "step": step, **shared, "depth": window}),  # the top window only
        ("tdpart", {"name": "tdpart", "cutoff": cutoff, **shared}),
        ("parallel_blocks", {"name": "parallel_blocks", **shared}),
        ("parallel_blocks+top", {"name": "parallel_blocks", "rerank_top": True, **shared}),
    ]


def reasoning_grid(budgets: list[int]) -> list[tuple[str, dict]]:
    return [("think", {"mode": "think"}), *((f"budget {b}", {"mode": "budget", "budget_tokens": b}) for b in budgets),
            ("none", {"mode": "none"})]


def scripted_window(grades: dict[str, int]):
    """A model that ranks each window by the grades of its passages' texts (stable): a test double."""
    from reasonrank.engines.base import Generation
    from reasonrank.parsing import format_answer

    async def window(call):
        shown = [grades.get(text.strip(), 0) for _, text in _PASSAGE.findall(call.messages[1]["content"])]
        order = sorted(range(len(shown)), key=lambda i: -shown[i])
        return Generation(f"<think></think><answer>{format_answer(order)}</answer>", 0, 0, 0.0)

    return window


def paper_setting(queries: int = 200, seed: int = 0) -> list[dict]:
    """Calls and sequential rounds per query for the top 100 with windows of 20, from a scripted model over queries whose
    relevant passages (about 1 in 10, graded 1-3) lie anywhere in the list."""
    from reasonrank.strategies import StrategyConfig
    from reasonrank.prompt import PassageTruncator
    from reasonrank.strategies import drive
    from reasonrank.types import Candidate, Query, RerankRequest

    rng = random.Random(seed)
    rows = []
    for label, keys in strategy_grid(20, 10, 100, None):
        strategy = StrategyConfig(**keys).build()
        calls, rounds = [], []
        for q in range(queries):
            texts = [f"passage {q}-{i}" for i in range(100)]
            grades = {t: rng.choice((1, 2, 3)) for t in texts if rng.random() < 0.1}
            request = RerankRequest.of(Query(str(q), "query"), [Candidate(t, t) for t in texts])
            ranked = asyncio.run(drive(strategy, request, PassageTruncator(None, None), scripted_window(grades)))
            calls.append(ranked.calls)
            rounds.append(ranked.rounds)
        rows.append({"strategy": label, "calls": statistics.mean(calls), "max_calls": max(calls),
                     "rounds": statistics.mean(rounds), "max_rounds": max(rounds)})
    return rows


def deeper_run(demo_dir: str, queries: int, depth: int):
    """The demo's held-out queries (the first `queries`) with the top `depth` of BM25 over the whole corpus."""
    from reasonrank.data.dataset import RetrievalDataset
    from reasonrank.data.demo import ensure_demo_dataset

    held_out = ensure_demo_dataset(demo_dir).load().subset("test").head(queries)
    return RetrievalDataset.with_bm25(held_out.queries, held_out.corpus, held_out.qrels, depth, held_out.splits)


async def timed(strategy, requests, truncate, window, concurrency: int):
    """Each request's ranking and its latency (its own start to end), `concurrency` queries at a time."""
    from reasonrank.strategies import drive

    slots = asyncio.Semaphore(concurrency)

    async def one(request):
        async with slots:
            started = time.perf_counter()
            ranked = await drive(strategy, request, truncate, window)
            return ranked, time.perf_counter() - started

    done = await asyncio.gather(*(one(r) for r in requests))
    return [r for r, _ in done], [s for _, s in done]


def relevant_by_depth(requests, qrels, window: int) -> tuple[int, int]:
    """How many relevant passages the first stage leaves in its top window, and how many below it."""
    top = below = 0
    for request in requests:
        graded = qrels.get(request.query.qid, {})
        hits = [graded.get(c.docid, 0) > 0 for c in request.candidates]
        top, below = top + sum(hits[:window]), below + sum(hits[window:])
    return top, below


def ndcg10(rankings, qrels) -> dict[str, float]:
    from reasonrank.metrics import per_query_metrics

    run = {r.qid: {d: float(len(r.docids) - i) for i, d in enumerate(r.docids)} for r in rankings}
    return {q: v["ndcg@10"] for q, v in per_query_metrics(run, qrels, ndcg_ks=(10,), recall_ks=(10,)).items()}


def measure(engine, strategy, requests, qrels, params, truncate, latency_queries: int) -> dict:
    from reasonrank.strategies import EngineWindows
    from reasonrank.types import Windows

    window = EngineWindows(engine, params)
    engine.reset_prefix_cache()
    ranked, at_16 = asyncio.run(timed(strategy, requests, truncate, window, CONCURRENCY))
    engine.reset_prefix_cache()
    _, at_1 = asyncio.run(timed(strategy, requests[:latency_queries], truncate, window, 1))
    windows = Windows.of(ranked)
    calls = max(windows.calls, 1)
    return {
        "calls": statistics.mean(r.calls for r in ranked), "rounds": statistics.mean(r.rounds for r in ranked),
        "prompt_tokens": statistics.mean(r.prompt_tokens for r in ranked),
        "completion_tokens": statistics.mean(r.completion_tokens for r in ranked),
        "p50_s_at_1": statistics.median(at_1), f"p50_s_at_{CONCURRENCY}": statistics.median(at_16),
        "well_formed": (windows.calls - windows.malformed_windows) / calls,
        "forced": windows.forced_answers / calls,
        "per_query_ndcg@10": ndcg10(ranked, qrels),
    }


def table(first_stage: float, rows: list[dict], paper: list[dict]) -> str:
    head = ("| strategy | reasoning | calls/q | rounds | prompt tok/q | completion tok/q | p50 s @1 | p50 s @16 "
            "| NDCG@10 | Δ vs sliding (95% CI) | p | well-formed | forced |")
    lines = [head, "|" + "---|" * 13, f"| BM25 top-50 | — | 0 | 0 | 0 | 0 | — | — | {first_stage:.4f} | | | | |"]
    for r in rows:
        vs = r.get("vs_sliding")
        delta = (f"{vs['difference']:+.4f} ({vs['ci_low']:+.4f}, {vs['ci_high']:+.4f}) | {vs['p_value']:.3f}"
                 if vs else "baseline | —")
        lines.append(f"| {r['strategy']} | {r['reasoning']} | {r['calls']:.1f} | {r['rounds']:.1f} "
                     f"| {r['prompt_tokens']:.0f} | {r['completion_tokens']:.0f} | {r['p50_s_at_1']:.2f} "
                     f"| {r[f'p50_s_at_{CONCURRENCY}']:.2f} | {r['ndcg@10']:.4f} | {delta} "
                     f"| {r['well_formed']:.0%} | {r['forced']:.0%} |")
    paper_line = "; ".join(f"{p['strategy']} {p['calls']:.1f} calls (max {p['max_calls']}), rounds {p['rounds']:.1f} "
                           f"(max {p['max_rounds']})" for p in paper)
    return "\n".join(lines) + f"\n\nPaper setting (top-100, windows of 20, scripted model, no LLM): {paper_line}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="outputs/demo-pipeline/sft/final", help="the demo SFT model")
    parser.add_argument("--tiny", action="store_true", help="the untrained tiny model instead (smoke runs)")
    parser.add_argument("--demo-dir", default="outputs/demo")
    parser.add_argument("--queries", type=int, default=250)
    parser.add_argument("--latency-queries", type=int, default=64, help="queries timed one at a time")
    parser.add_argument("--first-stage-depth", type=int, default=50)
    parser.add_argument("--window", type=int, default=10)
    parser.add_argument("--step", type=int, default=5)
    parser.add_argument("--passage-tokens", type=int, default=64)
    parser.add_argument("--max-new-tokens", type=int, default=320)
    parser.add_argument("--cutoff", type=int, help="tdpart's pivot: its 0-based rank in the top window "
                                                      "(default: half the window)")
    parser.add_argument("--budgets", type=int, nargs="*", default=[64, 160], help="reasoning budgets in tokens")
    parser.add_argument("--rows", nargs="*", metavar="STRATEGY:MODE",
                        help="measure only these rows (e.g. tdpart:think 'tdpart:budget 64' tdpart:none); the "
                             "baseline sliding_window:think always runs first. Default: every strategy and mode")
    parser.add_argument("--quick", action="store_true", help="10 queries, 4 timed alone, one budget")
    parser.add_argument("--out", default="outputs/bench")
    args = parser.parse_args()
    if args.quick:
        args.queries, args.latency_queries, args.budgets = 10, 4, args.budgets[:1]

    from reasonrank.config import EngineConfig
    from reasonrank.strategies import StrategyConfig
    from reasonrank.engines import SamplingParams
    from reasonrank.engines.vllm_engine import VLLMEngine
    from reasonrank.metrics import evaluate_run
    from reasonrank.prompt import PassageTruncator
    from reasonrank.significance import paired_difference
    from reasonrank.strategies import EngineWindows

    paper = paper_setting()
    dataset = deeper_run(args.demo_dir, args.queries, args.first_stage_depth)
    requests = dataset.requests(args.first_stage_depth)
    model = args.model
    if args.tiny:
        from reasonrank.data.demo import ensure_demo_dataset
        from reasonrank.tiny_model import ensure_tiny_model

        model = str(ensure_tiny_model("outputs/tiny-model", ensure_demo_dataset(args.demo_dir).texts()))
    elif not Path(model).exists():
        raise SystemExit(f"{model} does not exist: run `make demo` first, or pass --tiny for a smoke run")
    first_stage = evaluate_run({q: dict(s) for q, s in dataset.run.items()}, dataset.qrels)["ndcg@10"]
    engine = VLLMEngine(EngineConfig(backend="vllm", model=model, dtype="float32", max_model_len=4096))
    rows = []
    try:
        truncate = PassageTruncator(engine.tokenizer, args.passage_tokens, 4096, args.max_new_tokens)
        params = SamplingParams(max_new_tokens=args.max_new_tokens)
        grid = strategy_grid(args.window, args.step, args.first_stage_depth, args.passage_tokens, args.cutoff)
        warm_up = StrategyConfig(**grid[0][1]).build()
        asyncio.run(timed(warm_up, requests[:2], truncate, EngineWindows(engine, params), 2))
        baseline = None
        for label, keys in grid:
            for mode, reasoning in reasoning_grid(args.budgets):
                if args.rows is not None and baseline is not None and f"{label}:{mode}" not in args.rows:
                    continue
                strategy = StrategyConfig(**keys, reasoning=reasoning).build()
                row = {"strategy": label, "reasoning": mode,
                       **measure(engine, strategy, requests, dataset.qrels, params, truncate, args.latency_queries)}
                per_query = row["per_query_ndcg@10"]
                row["ndcg@10"] = statistics.mean(per_query.values())
                if baseline is None:
                    baseline = per_query
                else:
                    row["vs_sliding"] = paired_difference(baseline, per_query, "ndcg@10").as_dict()
                rows.append(row)
                print(f"{label} / {mode}: {row['calls']:.1f} calls, {row['rounds']:.1f} rounds, "
                      f"NDCG@10 {row['ndcg@10']:.4f}, p50 {row['p50_s_at_1']:.2f} s alone", flush=True)
    finally:
        engine.close()
    print()
    pivot = StrategyConfig(**dict(grid)["tdpart"]).build().cutoff
    print(f"{len(requests)} held-out demo queries, BM25 top-{args.first_stage_depth}, model {model}, windows of "
          f"{args.window} (sliding step {args.step}, tdpart's pivot at rank {pivot}), "
          "reasoning budgets in new tokens per window")
    top, below = relevant_by_depth(requests, dataset.qrels, args.window)
    print(f"Relevant passages in BM25's top {args.window}: {top}; "
          f"at ranks {args.window + 1}-{args.first_stage_depth}: {below}")
    print(table(first_stage, rows, paper))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "strategies.json").write_text(json.dumps({"args": vars(args), "first_stage_ndcg@10": first_stage,
                                                     "rows": rows, "paper_setting": paper}, indent=1))


if __name__ == "__main__":
    main()

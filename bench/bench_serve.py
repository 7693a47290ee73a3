"""The service on the continuous engine: its overhead, its latency under load, and its sequential rounds.

    python bench/bench_serve.py [--config configs/serve-tiny.yaml] [--requests 64] [--concurrency 1 8 32]
                                [--max-new-tokens 256] [--call-latency 1.0]

Three tables, ratios from this one run:
1. Overhead. Direct: the engine in this process, `c` clients each reranking one request at a time through
   the strategy driver (their windows share the engine's continuous batch, the best a caller can do), run
   twice: before Ray starts, and beside the running (idle) Serve app, which shows what hosting on Ray costs
   by itself on this machine (its controller, proxy and replica loops take CPU from the engine even when no
   request comes). HTTP: the Ray Serve app from the config on 127.0.0.1, `c` concurrent clients posting the
   same requests to /native/rerank. Requests/s and p50/p99 latency of each; HTTP/direct and HTTP/beside.
2. Interference. Through HTTP, the latency of a one-window request alone, and when it arrives while
   another request's window is being generated (median of several tries each).
3. Sequential rounds. The same app with its OpenAI-compatible backend pointed at a model server on loopback that
   answers every window after exactly `--call-latency` seconds (the simulated teacher, a test double):
   one sliding-window request over 100 documents alone, then 16 at once; wall time in calls.
Writes the tables as JSON under outputs/bench/.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import threading
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def _summary(latencies: list[float], wall_s: float) -> dict[str, float]:
    p50, p99 = np.percentile(latencies, [50, 99])
    return {"rps": len(latencies) / wall_s, "p50_ms": float(1000 * p50), "p99_ms": float(1000 * p99)}


async def _clients(requests: list, c: int, rank_one) -> dict[str, float]:
    """`c` clients, each taking the next request when its last one is answered."""
    queue, latencies = list(requests), []

    async def client() -> None:
        while queue:
            request = queue.pop()
            started = time.perf_counter()
            await rank_one(request)
            latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(c)))
    return _summary(latencies, time.perf_counter() - started)


def bench_direct(config, requests, levels, label: str = "direct") -> dict[int, dict[str, float]]:
    from reasonrank.engines import build_engine
    from reasonrank.prompt import PassageTruncator
    from reasonrank.strategies import EngineWindows, drive

    engine = build_engine(config.engine)
    try:
        strategy, params = config.strategy.build(), config.sampling.params()
        truncate = PassageTruncator(engine.tokenizer, config.strategy.passage_max_tokens)
        window = EngineWindows(engine, params, config.max_windows_in_flight)

        async def rank_one(request) -> None:
            await drive(strategy, request, truncate, window)

        asyncio.run(rank_one(requests[0]))  # warm-up
        out = {}
        for c in levels:
            out[c] = asyncio.run(_clients(requests, c, rank_one))
            print(f"{label:<7} c={c:<3} {out[c]}", flush=True)
        return out
    finally:
        engine.close()


class Service:
    """A Serve app from `config` on a free loopback port, for the length of a `with` block."""

    def __init__(self, config):
        self.config = config

    def __enter__(self) -> "Service":
        from ray import serve

        from reasonrank.ports import free_port
        from serve.app import build_app

        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        serve.run(build_app(self.config), name="bench", route_prefix="/")
        return self

    def __exit__(self, *exc) -> None:
        from ray import serve

        serve.shutdown()


def _body(request) -> dict:
    return {"query": request.query.text, "documents": [c.text for c in request.candidates]}


def bench_http(service: Service, requests, levels) -> dict[int, dict[str, float]]:
    import httpx

    async def run_level(c: int) -> dict[str, float]:
        limits = httpx.Limits(max_connections=c)
        async with httpx.AsyncClient(base_url=service.url, timeout=600, limits=limits) as client:
            async def rank_one(request) -> None:
                (await client.post("/native/rerank", json=_body(request))).raise_for_status()

            await rank_one(requests[0])  # warm-up
            return await _clients(requests, c, rank_one)

    out = {}
    for c in levels:
        out[c] = asyncio.run(run_level(c))
        print(f"http    c={c:<3} {out[c]}", flush=True)
    return out


def bench_interference(service: Service, one: dict, other: dict, tries: int = 5) -> dict[str, float]:
    """Latency of `one` (a one-window request) alone, and sent while `other`'s window is generating."""
    import httpx

    with httpx.Client(base_url=service.url, timeout=600) as client:
        def timed(body: dict) -> float:
            started = time.perf_counter()
            client.post("/native/rerank", json=body).raise_for_status()
            return time.perf_counter() - started

        timed(one)  # warm-up
        alone = statistics.median(timed(one) for _ in range(tries))
        during = []
        for _ in range(tries):
            background = threading.Thread(target=timed, args=(other,))
            background.start()
            while client.get("/health").json()["windows_in_flight"] < 1:
                time.sleep(0.005)
            time.sleep(0.3 * alone)  # well into the other window's generation
            during.append(timed(one))
            background.join()
    return {"alone_ms": 1000 * alone, "during_ms": 1000 * statistics.median(during),
            "ratio": statistics.median(during) / alone}


def bench_rounds(config, demo, call_latency_s: float, concurrent: int) -> dict[str, float]:
    """Sliding-window requests over 100 documents through the OpenAI-compatible backend; wall time in calls."""
    import httpx

    from reasonrank.config import EngineConfig
    from reasonrank.strategies import StrategyConfig
    from reasonrank.data.tables import read_records
    from reasonrank.strategies import window_spans
    from reasonrank.teacher.simulated import SimulatedTeacher, SimulationConfig

    dataset = demo.load()
    queries = {r["qid"]: r["text"] for r in read_records(demo.queries_path)}
    corpus = {r["docid"]: r["text"] for r in read_records(demo.corpus_path)}
    passages = list(corpus.values())
    # the demo's first stage keeps 20 candidates: fill each list to 100 with other passages of the corpus
    bodies = [{"query": r.query.text,
               "documents": [c.text for c in r.candidates] + passages[80 * i: 80 * i + 100 - len(r.candidates)]}
              for i, r in enumerate(dataset.requests(100)[:concurrent])]
    windows = len(window_spans(100, 20, 10))
    fixed_latency = SimulationConfig(latency_s=call_latency_s, noise=0.0)
    with SimulatedTeacher(queries, corpus, dataset.qrels, fixed_latency) as teacher:
        remote = config.model_copy(update={
            "engine": EngineConfig(backend="openai", model="simulated-teacher", base_url=teacher.base_url,
                                   max_concurrency=64),
            "strategy": StrategyConfig(name="sliding_window", window_size=20, step=10, depth=100,
                                       passage_max_tokens=None),
            "build_tiny_model_from": None})
        with Service(remote) as service:
            async def post_all(bodies: list[dict]) -> float:
                async with httpx.AsyncClient(base_url=service.url, timeout=600) as client:
                    started = time.perf_counter()
                    answers = await asyncio.gather(*(client.post("/native/rerank", json=b) for b in bodies))
                    for answer in answers:
                        answer.raise_for_status()
                        assert len(answer.json()["windows"]) == windows
                    return time.perf_counter() - started

            alone = asyncio.run(post_all(bodies[:1]))
            together = asyncio.run(post_all(bodies))
    return {"windows_per_request": windows, "call_latency_s": call_latency_s, "concurrent": concurrent,
            "alone_calls": alone / call_latency_s, "together_calls": together / call_latency_s}


def _overhead_table(direct, beside, http) -> str:
    head = (f"{'conc':>4} | {'direct req/s':>12} {'beside req/s':>12} {'http req/s':>10} {'ratio':>6} "
            f"{'vs beside':>9} | {'direct p50':>10} {'http p50':>9} {'ratio':>6} | {'direct p99':>10} "
            f"{'http p99':>9} {'ratio':>6}")
    rows = [head, "-" * len(head)]
    for c in direct:
        d, b, h = direct[c], beside[c], http[c]
        rows.append(f"{c:>4} | {d['rps']:>12.2f} {b['rps']:>12.2f} {h['rps']:>10.2f} {h['rps'] / d['rps']:>6.2f} "
                    f"{h['rps'] / b['rps']:>9.2f} | "
                    f"{d['p50_ms']:>8.0f}ms {h['p50_ms']:>7.0f}ms {h['p50_ms'] / d['p50_ms']:>6.2f} | "
                    f"{d['p99_ms']:>8.0f}ms {h['p99_ms']:>7.0f}ms {h['p99_ms'] / d['p99_ms']:>6.2f}")
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="configs/serve-tiny.yaml")
    parser.add_argument("--requests", type=int, default=64)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--max-new-tokens", type=int, default=256, help="the window's response budget")
    parser.add_argument("--call-latency", type=float, default=1.0, help="the remote model's seconds per call")
    parser.add_argument("--rounds-requests", type=int, default=16)
    parser.add_argument("--out", default="outputs/bench")
    args = parser.parse_args()

    import ray

    from reasonrank.config import load_config
    from reasonrank.data.demo import ensure_demo_dataset
    from reasonrank.tiny_model import ensure_tiny_model
    from serve.config import ServeConfig

    config = load_config(args.config, ServeConfig, {"sampling.max_new_tokens": args.max_new_tokens})
    demo = ensure_demo_dataset(config.build_tiny_model_from or "outputs/demo")
    if config.build_tiny_model_from is not None:  # the direct run needs it before build_app would build it
        ensure_tiny_model(config.engine.model, demo.texts())
    requests = demo.load().requests(config.strategy.depth)[: args.requests]
    one_window = [r for r in demo.load().requests(config.strategy.window_size)[:2]]
    print(f"{len(requests)} requests of {len(requests[0].candidates)} documents; strategy {config.strategy}; "
          f"max_new_tokens {config.sampling.max_new_tokens}", flush=True)
    direct = bench_direct(config, requests, args.concurrency)
    ray.init(include_dashboard=False)
    try:
        with Service(config) as service:
            beside = bench_direct(config, requests, args.concurrency, "beside")
            http = bench_http(service, requests, args.concurrency)
            interference = bench_interference(service, _body(one_window[0]), _body(one_window[1]))
        rounds = bench_rounds(config, demo, args.call_latency, args.rounds_requests)
    finally:
        ray.shutdown()

    print("\n1. HTTP endpoint vs direct on the engine (ratios are http/direct; `vs beside`: http/direct beside the"
          " idle app):")
    print(_overhead_table(direct, beside, http))
    print("\n2. A one-window request through HTTP, alone and arriving while another request's window generates:")
    print(f"   alone {interference['alone_ms']:.0f} ms, during {interference['during_ms']:.0f} ms: "
          f"{interference['ratio']:.2f}x")
    print(f"\n3. Sliding window over 100 documents ({rounds['windows_per_request']} sequential windows), remote model "
          f"answering each call in {rounds['call_latency_s']:g} s:")
    print(f"   one request alone: {rounds['alone_calls']:.2f} calls of wall time; {rounds['concurrent']} at once: "
          f"{rounds['together_calls']:.2f} calls")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench_serve.json").write_text(json.dumps(
        {"direct": direct, "beside": beside, "http": http, "interference": interference, "rounds": rounds}, indent=2))
    print(f"wrote {out / 'bench_serve.json'}")


if __name__ == "__main__":
    main()

"""The service's overhead: the same rerank requests through the HTTP endpoint vs directly on the engine.

    python bench/bench_serve.py [--config configs/serve-tiny.yaml] [--requests 64] [--concurrency 1 8 32]

Direct: the engine in this process, `c` requests at a time reranked together by `reasonrank.strategies
.rerank` (their windows share engine calls, the best batching a caller can do); a request's latency is its
group's. HTTP: the Ray Serve app from the config on 127.0.0.1, `c` concurrent clients posting the same
requests to /native/rerank. Both use the config's strategy and sampling. Prints requests/s and p50/p99
latency of each, and HTTP/direct ratios from this one run; writes the table as JSON and a plot under
outputs/bench/.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def _summary(latencies: list[float], wall_s: float, batch_sizes: list[int]) -> dict[str, float]:
    """Requests/s, p50/p99 latency, and the mean number of windows per engine call a window rode in."""
    p50, p99 = np.percentile(latencies, [50, 99])
    return {"rps": len(latencies) / wall_s, "p50_ms": float(1000 * p50), "p99_ms": float(1000 * p99),
            "batch": float(np.mean(batch_sizes))}


def bench_direct(config, requests, levels) -> dict[int, dict[str, float]]:
    from reasonrank.engines import build_engine
    from reasonrank.prompt import PassageTruncator
    from reasonrank.strategies import rerank

    engine = build_engine(config.engine)
    try:
        strategy, params = config.strategy.build(), config.sampling.params()
        truncate = PassageTruncator(engine.tokenizer, config.strategy.passage_max_tokens)
        rerank(engine, strategy, requests[:1], params, truncate)  # warm-up
        out = {}
        for c in levels:
            latencies, batch_sizes, started = [], [], time.perf_counter()

            def record(windows: int, _done: int) -> None:
                batch_sizes.extend([windows] * windows)  # per window, like the service reports it

            for lo in range(0, len(requests), c):
                group = requests[lo: lo + c]
                t = time.perf_counter()
                rerank(engine, strategy, group, params, truncate, on_round=record)
                latencies += [time.perf_counter() - t] * len(group)
            out[c] = _summary(latencies, time.perf_counter() - started, batch_sizes)
            print(f"direct  c={c:<3} {out[c]}", flush=True)
        return out
    finally:
        engine.close()


def bench_http(config, requests, levels) -> dict[int, dict[str, float]]:
    import httpx
    import ray
    from ray import serve

    from serve.app import build_app

    bodies = [{"query": r.query.text, "documents": [c.text for c in r.candidates]} for r in requests]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ray.init(include_dashboard=False)
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        serve.run(build_app(config), name="bench", route_prefix="/")

        async def warm_up(client) -> None:
            (await client.post("/native/rerank", json=bodies[0])).raise_for_status()

        async def run_level(c: int) -> dict[str, float]:
            latencies: list[float] = []
            batch_sizes: list[int] = []
            queue = list(bodies)

            async def client_loop(client):
                while queue:
                    body = queue.pop()
                    t = time.perf_counter()
                    r = await client.post("/native/rerank", json=body)
                    r.raise_for_status()
                    latencies.append(time.perf_counter() - t)
                    batch_sizes.extend(w["batch_size"] for w in r.json()["windows"])

            limits = httpx.Limits(max_connections=c)
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=600, limits=limits) as client:
                await warm_up(client)
                started = time.perf_counter()
                await asyncio.gather(*(client_loop(client) for _ in range(c)))
                return _summary(latencies, time.perf_counter() - started, batch_sizes)

        out = {}
        for c in levels:
            out[c] = asyncio.run(run_level(c))
            print(f"http    c={c:<3} {out[c]}", flush=True)
        return out
    finally:
        serve.shutdown()
        ray.shutdown()


def _table(direct, http) -> str:
    head = (f"{'conc':>4} | {'direct req/s':>12} {'http req/s':>10} {'ratio':>6} | {'direct p50':>10} "
            f"{'http p50':>9} {'ratio':>6} | {'direct p99':>10} {'http p99':>9} {'ratio':>6} | "
            f"{'windows/call d/h':>16}")
    rows = [head, "-" * len(head)]
    for c in direct:
        d, h = direct[c], http[c]
        rows.append(f"{c:>4} | {d['rps']:>12.2f} {h['rps']:>10.2f} {h['rps'] / d['rps']:>6.2f} | "
                    f"{d['p50_ms']:>8.0f}ms {h['p50_ms']:>7.0f}ms {h['p50_ms'] / d['p50_ms']:>6.2f} | "
                    f"{d['p99_ms']:>8.0f}ms {h['p99_ms']:>7.0f}ms {h['p99_ms'] / d['p99_ms']:>6.2f} | "
                    f"{d['batch']:>7.1f} / {h['batch']:<6.1f}")
    return "\n".join(rows)


def _plot(direct, http, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    levels = list(direct)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    for (name, res), color in zip((("direct", direct), ("http", http)), ("tab:blue", "tab:orange")):
        ax1.plot(levels, [res[c]["rps"] for c in levels], marker="o", color=color, label=name)
        ax2.plot(levels, [res[c]["p50_ms"] for c in levels], marker="o", color=color, label=f"{name} p50")
        ax2.plot(levels, [res[c]["p99_ms"] for c in levels], marker="x", linestyle="--", color=color,
                 label=f"{name} p99")
    ax1.set(xscale="log", xlabel="concurrency", ylabel="requests/s", title="throughput")
    ax2.set(xscale="log", yscale="log", xlabel="concurrency", ylabel="latency (ms)", title="latency")
    ax1.legend()
    ax2.legend()
    fig.tight_layout()
    fig.savefig(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="configs/serve-tiny.yaml")
    parser.add_argument("--requests", type=int, default=64)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--out", default="outputs/bench")
    args = parser.parse_args()

    from reasonrank.config import load_config
    from reasonrank.data.demo import ensure_demo_dataset
    from reasonrank.tiny_model import ensure_tiny_model
    from serve.config import ServeConfig

    config = load_config(args.config, ServeConfig)
    demo = ensure_demo_dataset(config.build_tiny_model_from or "outputs/demo")
    if config.build_tiny_model_from is not None:  # the direct run needs it before build_app would build it
        ensure_tiny_model(config.engine.model, demo.texts())
    requests = demo.load().requests(config.strategy.depth)[: args.requests]
    print(f"{len(requests)} requests of {len(requests[0].candidates)} documents; strategy {config.strategy}; "
          f"max_new_tokens {config.sampling.max_new_tokens}", flush=True)
    direct = bench_direct(config, requests, args.concurrency)
    http = bench_http(config, requests, args.concurrency)
    print("\nHTTP endpoint vs direct on the engine (ratios are http/direct, from this run):")
    print(_table(direct, http))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench_serve.json").write_text(json.dumps({"direct": direct, "http": http}, indent=2))
    _plot(direct, http, out / "bench_serve.png")
    print(f"wrote {out / 'bench_serve.json'} and {out / 'bench_serve.png'}")


if __name__ == "__main__":
    main()

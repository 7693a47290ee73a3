"""Requests/s the OpenAI-compatible engine achieves against the simulated teacher, by concurrency.

The simulated teacher (a test double for DeepSeek-R1) answers every request after a fixed latency, in a
process of its own; the engine keeps `concurrency` requests in flight. The ideal is concurrency ÷ latency;
the ratio says how much of it the client side (one event loop, the `openai` client) delivers.

    python bench/bench_teacher.py [--latency 0.5] [--concurrency 8 64 256] [--rounds 4]
"""
from __future__ import annotations

import argparse
import multiprocessing as mp
import time

from reasonrank.config import EngineConfig
from reasonrank.engines.base import SamplingParams
from reasonrank.engines.openai_engine import OpenAIEngine
from reasonrank.teacher.prompts import pointwise_messages
from reasonrank.teacher.simulated import SimulatedTeacher, SimulationConfig


def _corpus(n: int) -> tuple[dict[str, str], dict[str, str], dict[str, dict[str, int]]]:
    queries = {"q0": "Which passage states the melting point of zorvium?"}
    corpus = {f"d{i}": f"Passage {i}: zorvium melts at {200 + i} degrees under standard pressure." for i in range(n)}
    return queries, corpus, {"q0": {f"d{i}": int(i % 5 == 0) for i in range(n)}}


def _serve(latency_s: float, port_out, stop) -> None:
    """The simulated teacher in its own process, so the client's CPU is measured alone."""
    queries, corpus, qrels = _corpus(4096)
    with SimulatedTeacher(queries, corpus, qrels, SimulationConfig(latency_s=latency_s, noise=0.0)) as teacher:
        port_out.send(teacher.base_url)
        stop.wait()


def measure(base_url: str, concurrency: int, requests: int) -> float:
    queries, corpus, _ = _corpus(requests)
    batch = [pointwise_messages(queries["q0"], text) for text in corpus.values()]
    engine = OpenAIEngine(EngineConfig(backend="openai", model="simulated-deepseek-r1", base_url=base_url,
                                       max_concurrency=concurrency, max_retries=0, request_timeout_s=60))
    started = time.perf_counter()
    engine.generate(batch, SamplingParams(max_new_tokens=256))
    return requests / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--latency", type=float, default=0.5, help="seconds the teacher takes per request")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[8, 64, 256])
    parser.add_argument("--rounds", type=int, default=4, help="requests per run = rounds × concurrency")
    args = parser.parse_args()
    ctx = mp.get_context("spawn")
    receive, send = ctx.Pipe(duplex=False)
    stop = ctx.Event()
    server = ctx.Process(target=_serve, args=(args.latency, send, stop), daemon=True)
    server.start()
    try:
        base_url = receive.recv()
        measure(base_url, 8, 16)  # warm-up: imports, connection pool
        print(f"simulated teacher latency {args.latency:.3f} s; {args.rounds} rounds of requests per run")
        print(f"{'concurrency':>11}  {'requests':>8}  {'achieved req/s':>14}  {'ideal req/s':>11}  {'ratio':>5}")
        for c in args.concurrency:
            n = args.rounds * c
            achieved, ideal = measure(base_url, c, n), c / args.latency
            print(f"{c:>11}  {n:>8}  {achieved:>14.1f}  {ideal:>11.1f}  {achieved / ideal:>5.2f}")
    finally:
        stop.set()
        server.join(timeout=30)


if __name__ == "__main__":
    main()

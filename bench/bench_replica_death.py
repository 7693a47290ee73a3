"""A model replica SIGKILLed under load: what the clients see, with two replicas and with one.

    PYTHONPATH=. python bench/bench_replica_death.py [--clients 16] [--kill-after-s 6] [--after-s 15]

Each scenario deploys the service on a local Ray (the OpenAI-compatible backend on a scripted model on
127.0.0.1 that answers each window in 0.3 s: tests/scripted_model.py; three windows per 20-document
request), runs `--clients` clients sending 20-document `/v2/rerank` requests back to back, SIGKILLs one
model replica's process after `--kill-after-s`, and goes on until `--after-s` past the moment the
replacement is RUNNING in Serve. Scenarios: two replicas; one replica (the ingress's default
`replica_wait_s`, 30 s); one replica with `replica_wait_s` 2 s (so the wait ends before the replacement).

Prints one row per scenario: requests sent, answered 200, calls resent to another replica (the ingress's
`reasonrank_replica_retries` counter), failures by status, 503s that carried Retry-After, failures among
requests sent after the replacement serves, p50/p99 latency of requests before the kill, during (sent
before the replacement serves and ending after the kill) and after, and the seconds from the kill until the
replacement serves.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import re
import signal
import statistics
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import httpx
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.scripted_model import (DOCS, MORE_DOCS, QUERY, expected_order, fixed_replicas, scripted_model,
                                  scripted_serve_config)  # noqa: E402


@dataclass
class Outcome:
    sent: float
    done: float
    status: int
    retry_after: bool
    right: bool  # a 200 with the known ranking


def percentiles(latencies: list[float]) -> str:
    if not latencies:
        return "-"
    ordered = sorted(latencies)
    p99 = ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]
    return f"{statistics.median(ordered):.2f}/{p99:.2f}"


def retries_counted() -> float:
    import ray

    port = ray.nodes()[0]["MetricsExportPort"]
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    return sum(float(v) for v in re.findall(r"^ray_reasonrank_replica_retries_total\{[^}]*\} ([0-9.eE+-]+)$", text,
                                            re.MULTILINE))


def running_replicas(app: str) -> int:
    from ray import serve

    status = serve.status().applications.get(app)
    if status is None:
        return 0
    return status.deployments["Reranker"].replica_states.get("RUNNING", 0)


def model_processes(app: str) -> list[psutil.Process]:
    return [p for p in psutil.process_iter(["cmdline"])
            if f"ServeReplica:{app}:Reranker" in " ".join(p.info["cmdline"] or [])]


async def load(base_url: str, clients: int, stop: threading.Event) -> list[Outcome]:
    outcomes: list[Outcome] = []
    expected = expected_order(len(DOCS + MORE_DOCS))

    async def client_loop(client: httpx.AsyncClient) -> None:
        while not stop.is_set():
            sent = time.monotonic()
            r = await client.post("/v2/rerank", json={"query": QUERY, "documents": DOCS + MORE_DOCS})
            right = r.status_code == 200 and [x["index"] for x in r.json()["results"]] == expected
            outcomes.append(Outcome(sent, time.monotonic(), r.status_code, "retry-after" in r.headers, right))

    async with httpx.AsyncClient(base_url=base_url, timeout=120,
                                 limits=httpx.Limits(max_connections=clients)) as client:
        await asyncio.gather(*(client_loop(client) for _ in range(clients)))
    return outcomes


def scenario(name: str, model_url: str, port: int, replicas: int, replica_wait_s: float | None,
             clients: int, kill_after_s: float, after_s: float) -> dict[str, str]:
    from ray import serve

    from serve.app import build_app
    from serve.config import ServeConfig

    ingress = {} if replica_wait_s is None else {"replica_wait_s": replica_wait_s}
    serve.run(build_app(ServeConfig.model_validate(scripted_serve_config(
        model_url, deployment=fixed_replicas(replicas), ingress=ingress))), name=name, route_prefix=f"/{name}")
    retried_before = retries_counted()
    stop = threading.Event()
    marks: dict[str, float] = {}

    def kill_and_watch() -> None:
        time.sleep(kill_after_s)
        victim = model_processes(name)[0]
        marks["kill"] = time.monotonic()
        os.kill(victim.pid, signal.SIGKILL)
        while running_replicas(name) == replicas:  # until Serve has seen the death
            time.sleep(0.1)
        while running_replicas(name) < replicas:
            time.sleep(0.1)
        marks["replaced"] = time.monotonic()
        time.sleep(after_s)
        stop.set()

    watcher = threading.Thread(target=kill_and_watch, daemon=True)
    watcher.start()
    outcomes = asyncio.run(load(f"http://127.0.0.1:{port}/{name}", clients, stop))
    watcher.join()
    time.sleep(12)  # past Ray's next metrics export (every 10 s)
    retried = retries_counted() - retried_before
    serve.delete(name)

    kill, replaced = marks["kill"], marks["replaced"]
    failed = Counter(o.status for o in outcomes if o.status != 200)
    return {
        "scenario": name,
        "sent": str(len(outcomes)),
        "answered": str(sum(o.status == 200 for o in outcomes)),
        "right": str(sum(o.right for o in outcomes)),
        "retried": f"{retried:.0f}",
        "failed": ", ".join(f"{s}: {n}" for s, n in sorted(failed.items())) or "0",
        "503 w/ Retry-After": str(sum(o.status == 503 and o.retry_after for o in outcomes)),
        "failed after": str(sum(o.status != 200 for o in outcomes if o.sent >= replaced)),
        "p50/p99 before": percentiles([o.done - o.sent for o in outcomes if o.done < kill]),
        "during": percentiles([o.done - o.sent for o in outcomes if o.done >= kill and o.sent < replaced]),
        "after": percentiles([o.done - o.sent for o in outcomes if o.sent >= replaced]),
        "replacement serves after": f"{replaced - kill:.1f} s",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--kill-after-s", type=float, default=6.0)
    parser.add_argument("--after-s", type=float, default=15.0)
    args = parser.parse_args()

    import ray
    from ray import serve

    from reasonrank.ports import free_port

    ray.init(num_cpus=8, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    rows = []
    with scripted_model(latency_s=0.3) as model:
        for name, replicas, wait in (("two-replicas", 2, None), ("one-replica", 1, None),
                                     ("one-replica-wait-2s", 1, 2.0)):
            rows.append(scenario(name, model.base_url, port, replicas, wait, args.clients, args.kill_after_s,
                                 args.after_s))
            print(rows[-1], flush=True)
    serve.shutdown()
    ray.shutdown()
    columns = list(rows[0])
    print(f"\n{args.clients} clients, 20-document /v2/rerank requests, 3 windows of 0.3 s each; one model replica "
          f"SIGKILLed {args.kill_after_s:g} s in; latencies in s\n")
    print("| " + " | ".join(columns) + " |")
    print("|" + "---|" * len(columns))
    for row in rows:
        print("| " + " | ".join(row[c] for c in columns) + " |")


if __name__ == "__main__":
    main()

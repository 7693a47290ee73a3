"""Autoscaling over time: the model deployment's replicas, the load they hold and the latency, while load comes
and goes.

    PYTHONPATH=. python bench/bench_autoscaling.py [--clients 6] [--load-s 40] [--idle-s 30]
        [--idle-clients 1] [--window-latency 0.25] [--target 2] [--max-replicas 2] [--upscale-delay 1]
        [--downscale-delay 3] [--look-back 2] [--metrics-interval 0.5] [--row-s 2]

A local Ray Serve app whose engine is the OpenAI-compatible backend pointed at a scripted model server on
127.0.0.1 that answers each window after `--window-latency` seconds (tests/scripted_model.py, a test double
for a model server), so replicas are cheap and every answer's ranking is known. Load: `--clients` clients in a
closed loop posting /v2/rerank for `--load-s` seconds, then one client with a 1 s pause between requests for
`--idle-s` seconds (far below one replica's target; `--idle-clients 0` for none at all).

One row per `--row-s` seconds: replicas running (Serve's count, and starting/stopping), replicas serving
(those that answered a request finished in the row, from Serve's replica logs), requests in flight (sent and
not answered: ongoing and queued at the service, what the autoscaler compares with target × replicas),
requests finished, their p50/p99 latency, failures. Then: time from load start to the second replica running
and to it serving, time from the load's end to one replica again, failed and wrongly ranked requests.
Exits 1 when a request failed or was ranked wrongly.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from collections import Counter

import numpy as np

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=6)
    parser.add_argument("--load-s", type=float, default=40)
    parser.add_argument("--idle-s", type=float, default=30)
    parser.add_argument("--idle-clients", type=int, default=1)
    parser.add_argument("--window-latency", type=float, default=0.25)
    parser.add_argument("--target", type=float, default=2, help="autoscaling.target_ongoing_requests")
    parser.add_argument("--max-replicas", type=int, default=2)
    parser.add_argument("--upscale-delay", type=float, default=1)
    parser.add_argument("--downscale-delay", type=float, default=3)
    parser.add_argument("--look-back", type=float, default=2, help="autoscaling.look_back_period_s")
    parser.add_argument("--metrics-interval", type=float, default=0.5, help="autoscaling.metrics_interval_s")
    parser.add_argument("--row-s", type=float, default=2)
    args = parser.parse_args(argv)

    import ray

    from serve.config import ServeConfig
    from tests.replica_log import ReplicaLog, replica_states
    from tests.rerank_load import RerankLoad
    from tests.scripted_model import DOCS, QUERY, expected_order, scripted_model, scripted_serve_config
    from tests.serving import serving

    autoscaling = {"min_replicas": 1, "max_replicas": args.max_replicas, "target_ongoing_requests": args.target,
                   "upscale_delay_s": args.upscale_delay, "downscale_delay_s": args.downscale_delay,
                   "look_back_period_s": args.look_back, "metrics_interval_s": args.metrics_interval}
    print(f"autoscaling {autoscaling}; {args.clients} clients for {args.load_s:g} s, then {args.idle_clients} "
          f"for {args.idle_s:g} s; the scripted model answers a window in {args.window_latency:g} s "
          "(a request: 3 windows in turn)")
    app = "reranker-autoscaling-bench"
    ray.init(num_cpus=8, include_dashboard=False, log_to_driver=False)
    with scripted_model(args.window_latency) as model:
        config = ServeConfig.model_validate(scripted_serve_config(model.base_url, deployment={"autoscaling": autoscaling}))
        with serving(config, app) as client:
            log = ReplicaLog(app)
            with RerankLoad(str(client.base_url), {"query": QUERY, "documents": DOCS}) as load:
                timeline = Timeline(load, log, lambda: replica_states(app), args.row_s)
                print(Timeline.HEADER)
                load.clients(args.clients)
                timeline.run("load", args.load_s)
                load.clients(args.idle_clients, pause_s=1.0)
                timeline.run("idle", args.idle_s)
                load.clients(0)
                load.wait_idle(60)
            replica_of = log.read()
    return timeline.summary(replica_of, tuple(expected_order(len(DOCS))))


class Timeline:
    """Polls the replica states every 0.25 s, prints a row every `row_s`, and keeps the times of the changes."""

    HEADER = (f"{'t s':>6} {'phase':>5} {'running':>7} {'start/stop':>10} {'serving':>7} {'in flight':>9} "
              f"{'done':>5} {'p50 ms':>7} {'p99 ms':>7} {'failed':>6}")

    def __init__(self, load, log, states, row_s: float):
        self.load, self.log, self.states, self.row_s = load, log, states, row_s
        self.start = time.monotonic()
        self.phase_start: dict[str, float] = {}
        self.second_running: float | None = None  # since the load started
        self.back_to_one: float | None = None  # since the load ended
        self.row_from, self.reported = self.start, 0

    def run(self, phase: str, seconds: float) -> None:
        began = self.phase_start[phase] = time.monotonic()
        next_row = self.row_from + self.row_s
        while time.monotonic() - began < seconds:
            states = self.states()
            now = time.monotonic()
            if phase == "load" and self.second_running is None and states["RUNNING"] >= 2:
                self.second_running = now - began
            if phase == "idle" and self.back_to_one is None and states == {"RUNNING": 1}:
                self.back_to_one = now - began
            if now >= next_row:
                self.row(phase, states, now)
                next_row = now + self.row_s
            time.sleep(0.25)

    def row(self, phase: str, states: Counter[str], now: float) -> None:
        finished = self.load.outcomes[self.reported:]  # appended in the order they finished
        self.reported += len(finished)
        replica_of = self.log.read()
        serving = {replica_of.get(o.request_id) for o in finished} - {None}
        latencies = [o.latency_s * 1000 for o in finished]
        p50, p99 = np.percentile(latencies, [50, 99]) if latencies else (float("nan"),) * 2
        changing = f"{states['STARTING']}/{states['STOPPING']}"
        print(f"{now - self.start:6.1f} {phase:>5} {states['RUNNING']:7d} {changing:>10} {len(serving):7d} "
              f"{self.load.in_flight:9d} {len(finished):5d} {p50:7.0f} {p99:7.0f} "
              f"{sum(o.status != 200 for o in finished):6d}", flush=True)
        self.row_from = now

    def summary(self, replica_of: dict[str, str], expected: tuple[int, ...]) -> int:
        outcomes, load_start = self.load.outcomes, self.phase_start["load"]
        seen: set[str] = set()
        second_serving = None
        for o in sorted(outcomes, key=lambda o: o.finished):
            seen.add(replica_of.get(o.request_id, "?"))
            if len(seen - {"?"}) >= 2:
                second_serving = o.finished - load_start
                break
        failed = sum(o.status != 200 for o in outcomes)
        wrong = sum(o.status == 200 and o.order != expected for o in outcomes)
        answered = Counter(replica_of.get(o.request_id, "?") for o in outcomes)

        def seconds(value: float | None) -> str:
            return "never" if value is None else f"{value:.1f} s"

        print(f"\nload start → second replica running: {seconds(self.second_running)}; "
              f"→ second replica serving: {seconds(second_serving)}")
        print(f"load end → one replica again: {seconds(self.back_to_one)}")
        print(f"requests: {len(outcomes)}, failed: {failed}, wrongly ranked: {wrong}; "
              f"answered per replica: {dict(answered)}")
        return 1 if failed or wrong else 0


if __name__ == "__main__":
    sys.exit(main())

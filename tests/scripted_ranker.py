"""A scripted OpenAI-compatible model on 127.0.0.1 whose rankings are known, and a serve config on it.

The model is the simulated teacher with no noise and no faults (reasonrank/teacher/simulated.py): it ranks
every window's passages by their relevance grades (ties in the window's order), after `latency_s`. So the
ranking each request must get is known in advance (`expected_order`), and is not the documents' order.
Shared by the serving tests and `bench/bench_replica_death.py`.
"""
from __future__ import annotations

from typing import Any

from reasonrank.strategies import window_spans
from reasonrank.teacher.simulated import SimulatedTeacher, SimulationConfig
from serve.config import ServeConfig

QUERY = "why do cats purr"
DOCS = [f"passage {i}: cats purr when content, and sometimes when stressed; fact number {i}." for i in range(20)]
GRADES = {13: 3, 7: 3, 18: 2, 2: 2, 11: 1, 5: 1}  # document index → relevance grade; the others 0
WINDOW, STEP, DEPTH = 10, 5, 20  # three windows over 20 documents, one after another


def expected_order(n: int = len(DOCS), window: int = WINDOW, step: int = STEP, depth: int = DEPTH) -> list[int]:
    """What a sliding window over a model that sorts each window by grade (stable) makes of documents 0…n-1."""
    order = list(range(n))
    for start, end in window_spans(min(depth, n), window, step):
        order[start:end] = sorted(order[start:end], key=lambda i: -GRADES.get(i, 0))
    return order


def scripted_model(latency_s: float) -> SimulatedTeacher:
    """The scripted model (not started: use it as a context manager), answering each window in `latency_s`."""
    return SimulatedTeacher({"q": QUERY}, {str(i): t for i, t in enumerate(DOCS)},
                            {"q": {str(i): g for i, g in GRADES.items()}},
                            SimulationConfig(noise=0.0, latency_s=latency_s, reasoning_words=8))


def scripted_config(base_url: str, replicas: int, **overrides: Any) -> ServeConfig:
    """A service of `replicas` model replicas on the scripted model at `base_url`; `overrides`: top-level keys."""
    config = {
        "model_name": "scripted", "engine": {"backend": "openai", "model": "scripted-ranker", "base_url": base_url,
                                             "max_retries": 0},
        "strategy": {"name": "sliding_window", "window_size": WINDOW, "step": STEP, "depth": DEPTH},
        "sampling": {"max_new_tokens": 512}, "limits": {"request_timeout_s": 60},
        "deployment": {"autoscaling": {"min_replicas": replicas, "max_replicas": replicas},
                       "resources": {"num_cpus": 0.5}, "health_check_period_s": 2,
                       "graceful_shutdown_timeout_s": 30},
    }
    return ServeConfig.model_validate({**config, **overrides})

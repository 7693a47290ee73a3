"""A scripted model behind an OpenAI-compatible server on 127.0.0.1, and the rankings it makes known in advance.

The server is the simulated teacher with no noise and no faults (reasonrank/teacher/simulated.py, a test double
for a real model server): it ranks every window's passages by their relevance grades (ties in the window's
order), each answer after a fixed delay. A service whose engine is the OpenAI-compatible backend pointed at it
is cheap to start (no model in the replica), and the ranking each request must get is known — and far from
the documents' order.
"""
from __future__ import annotations

from typing import Any

from reasonrank.strategies import window_spans
from reasonrank.teacher.simulated import SimulatedTeacher, SimulationConfig

QUERY = "why do cats purr"
# A request's documents; the first DEPTH are ranked in three windows, one after another (three model answers)
_ALL = [f"passage {i}: cats purr when content, and sometimes when stressed; fact number {i}." for i in range(20)]
DOCS = _ALL[:10]
MORE_DOCS = _ALL[10:]  # ten more the model knows, all grade 0: `DOCS + MORE_DOCS` is a twenty-document request
GRADES = {7: 3, 5: 2, 2: 1, 6: 1}  # document index → relevance grade; the others 0
WINDOW, STEP, DEPTH = 4, 2, 8
# Cohere's rank_fields: objects whose `title` and `body`, in that order, make the text ranked (their `text` is
# the same filler for all); the scripted model knows those texts, graded as the plain documents are.
FIELDED = [{"text": "filler", "title": f"title {i}", "body": doc} for i, doc in enumerate(DOCS)]
FIELDED_TEXTS = {f"fielded-{i}": f"title: title {i}\nbody: {doc}" for i, doc in enumerate(DOCS)}


def expected_order(n: int, window: int = WINDOW, step: int = STEP, depth: int = DEPTH) -> list[int]:
    """What a sliding window over a model that sorts each window by grade (stable) makes of documents 0…n-1."""
    order = list(range(n))
    for start, end in window_spans(min(depth, n), window, step):
        order[start:end] = sorted(order[start:end], key=lambda i: -GRADES.get(i, 0))
    return order


def scripted_model(latency_s: float) -> SimulatedTeacher:
    """The server (not started: use it as a context manager), answering each window after `latency_s`."""
    return SimulatedTeacher({"q": QUERY}, {**{str(i): t for i, t in enumerate(_ALL)}, **FIELDED_TEXTS},
                            {"q": {**{str(i): g for i, g in GRADES.items()},
                                   **{f"fielded-{i}": g for i, g in GRADES.items()}}},
                            SimulationConfig(noise=0.0, latency_s=latency_s, reasoning_words=8))


def scripted_serve_config(base_url: str, **sections: Any) -> dict[str, Any]:
    """A serve config (as its YAML would read) whose replicas rank with the scripted model at `base_url` through
    the OpenAI-compatible backend, by the sliding window `expected_order` assumes; `sections` add or replace
    keys."""
    return {"model_name": "scripted",
            "engine": {"backend": "openai", "model": "scripted-ranker", "base_url": base_url, "max_retries": 0},
            "strategy": {"name": "sliding_window", "window_size": WINDOW, "step": STEP, "depth": DEPTH},
            "sampling": {"max_new_tokens": 512}, "limits": {"request_timeout_s": 60}, **sections}


def fixed_replicas(replicas: int) -> dict[str, Any]:
    """The `deployment` section of a service with exactly `replicas` model replicas, quick to notice one dead."""
    return {"autoscaling": {"min_replicas": replicas, "max_replicas": replicas}, "resources": {"num_cpus": 0.5},
            "health_check_period_s": 2, "graceful_shutdown_timeout_s": 30}

"""Strategies, reasoning budgets and the direct mode chosen per deployment and per request, over real HTTP.

As in tests/test_serve_known_rankings.py, the replica's engine is the OpenAI-compatible backend pointed at a
scripted model server (the simulated teacher, no noise, no faults) that ranks every window by relevance
grades, so each request's ranking, calls and sequential rounds are known in advance and far from the documents' order.
The deployment's default is top-down partitioning; the native endpoint may ask for another strategy, a
reasoning budget (the scripted model's reasoning is longer, so every window's answer is forced) or no
reasoning. The Cohere and Jina endpoints keep their schemas and get the deployment's default.
"""
from __future__ import annotations

import time

import pytest

from reasonrank.teacher.simulated import SimulatedTeacher, SimulationConfig
from serve.config import ServeConfig
from tests.serving import serving
from tests.test_serve_app import _metric
from tests.test_serve_known_rankings import DOCS, GRADES, QUERY, expected_order

pytestmark = pytest.mark.slow

APP = "reranker-strategies"
# tdpart, windows of 5, pivot at rank 2, over all ten: [0..4] → pivot 1, then {1, 5, 6, 7, 8} and {1, 6, 7, 8, 9}
# at once (6, 7 and 8 only fill the second window), then the five that beat the pivot ranked in one window
TDPART_ORDER = [7, 5, 2, 6, 0, 1, 3, 4, 8, 9]
SLIDING = {"name": "sliding_window", "window_size": 4, "step": 2, "depth": 8}


@pytest.fixture(scope="module")
def service(ray_cluster, demo_data):
    teacher = SimulatedTeacher({"q": QUERY}, {str(i): t for i, t in enumerate(DOCS)},
                               {"q": {str(i): g for i, g in GRADES.items()}},
                               SimulationConfig(noise=0.0, latency_s=0.01, reasoning_words=40))
    with teacher:
        config = ServeConfig.model_validate({
            "model_name": "scripted", "engine": {"backend": "openai", "model": "scripted-ranker",
                                                 "base_url": teacher.base_url, "max_retries": 0},
            "strategy": {"name": "tdpart", "window_size": 5, "cutoff": 2, "depth": 10},
            "sampling": {"max_new_tokens": 512}, "limits": {"request_timeout_s": 60}})
        with serving(config, APP) as client:
            yield client


def native(service, strategy=None):
    body = {"query": QUERY, "documents": DOCS, "return_reasoning": True}
    if strategy is not None:
        body["strategy"] = strategy
    return service.post("/native/rerank", json=body)


def test_the_deployment_default_strategy_with_its_calls_and_rounds(service):
    assert TDPART_ORDER != list(range(10))
    r = native(service)
    assert r.status_code == 200, r.text
    assert [x["index"] for x in r.json()["ranking"]] == TDPART_ORDER
    usage = r.json()["usage"]
    assert (usage["windows"], usage["rounds"], usage["malformed_windows"], usage["forced_answers"]) == (4, 3, 0, 0)
    assert [w["round"] for w in r.json()["windows"]] == [0, 1, 1, 2]
    assert usage["prompt_tokens"] == sum(w["prompt_tokens"] for w in r.json()["windows"]) > 0


def test_cohere_and_jina_keep_their_schemas_and_use_the_default(service):
    r = service.post("/v2/rerank", json={"query": QUERY, "documents": DOCS, "top_n": 4})
    assert r.status_code == 200, r.text
    assert [x["index"] for x in r.json()["results"]] == TDPART_ORDER[:4]
    r = service.post("/rerank", json={"query": QUERY, "documents": DOCS, "top_n": 4})
    assert [x["index"] for x in r.json()["results"]] == TDPART_ORDER[:4]
    refused = service.post("/v1/rerank", json={"query": QUERY, "documents": DOCS, "strategy": SLIDING})
    assert refused.status_code == 422 and "strategy" in refused.text


def test_a_request_chooses_its_strategy_and_a_reasoning_budget(service):
    r = native(service, {**SLIDING, "reasoning": {"mode": "budget", "budget_tokens": 5}})
    assert r.status_code == 200, r.text
    assert [x["index"] for x in r.json()["ranking"]] == expected_order(10)
    windows, usage = r.json()["windows"], r.json()["usage"]
    assert (usage["windows"], usage["rounds"]) == (3, 3)
    assert usage["forced_answers"] == 3 and usage["malformed_windows"] == 0
    assert all(w["forced_answer"] and w["well_formed"] for w in windows)
    assert all(len(w["reasoning"].split()) == 5 for w in windows)  # the reasoning cut at its budget


def test_forced_answers_and_rounds_reach_prometheus(service):
    forced = _metric("ray_reasonrank_forced_answers_total")
    requests = _metric("ray_reasonrank_sequential_rounds_count")
    r = native(service, {**SLIDING, "reasoning": {"mode": "budget", "budget_tokens": 5}})
    assert r.status_code == 200, r.text
    deadline = time.monotonic() + 45  # Ray exports metrics every few seconds
    # (Ray's histogram sum is the buckets' midpoints, so the rounds are seen through the count)
    while (_metric("ray_reasonrank_forced_answers_total") < forced + 3
           or _metric("ray_reasonrank_sequential_rounds_count") < requests + 1):
        assert time.monotonic() < deadline, "the forced-answer counter or the rounds histogram did not rise"
        time.sleep(1)


def test_a_request_without_reasoning(service):
    r = native(service, {"name": "parallel_blocks", "window_size": 5, "depth": 10,
                         "reasoning": {"mode": "none"}})
    assert r.status_code == 200, r.text
    windows, usage = r.json()["windows"], r.json()["usage"]
    assert (usage["windows"], usage["rounds"], usage["malformed_windows"]) == (4, 1, 0)
    assert all(w["reasoning"] == "" for w in windows)
    assert [x["index"] for x in r.json()["ranking"]][:3] == [2, 7, 5]  # 2 and 7 win all their comparisons


@pytest.mark.parametrize("strategy,words", [
    ({"name": "tdpart", "window_size": 4, "cutoff": 4}, ["cutoff", "window_size"]),
    ({"reasoning": {"mode": "budget"}}, ["strategy.reasoning", "budget_tokens"]),
    ({"reasoning": {"mode": "none", "budget_tokens": 5}}, ["strategy.reasoning", "budget_tokens"]),
    ({"name": "iterative_elimination"}, ["strategy.name"]),
    ({"name": "sliding_window", "window_size": 2, "step": 3}, ["strategy.step", "window_size"]),
])
def test_invalid_combinations_are_refused_naming_the_field(service, strategy, words):
    r = native(service, strategy)
    assert r.status_code == 422, r.text
    assert all(word in r.text for word in words), r.text

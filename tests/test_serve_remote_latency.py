"""The service with its OpenAI-compatible backend: a request waits for its own windows only.

The backend talks to the simulated teacher (a test double for a remote model on loopback) answering every
call after a fixed delay, so a request's wall time can be counted in calls.
"""
from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx
import pytest

from reasonrank.config import load_config
from serve.config import ServeConfig
from tests.serving import serving

REPO = Path(__file__).resolve().parent.parent
CALL_S = 1.0  # the remote model's seconds per call


@pytest.fixture(scope="module")
def remote_service(ray_cluster):
    from reasonrank.teacher.simulated import SimulatedTeacher, SimulationConfig

    with SimulatedTeacher({}, {}, {}, SimulationConfig(latency_s=CALL_S, noise=0.0)) as teacher:
        config = load_config(REPO / "configs" / "serve-tiny.yaml", ServeConfig, {
            "model_name": "remote-continuous", "build_tiny_model_from": None,
            "engine": {"backend": "openai", "model": "simulated", "base_url": teacher.base_url},
            "strategy": {"name": "sliding_window", "window_size": 4, "step": 2, "depth": 10},
        })
        with serving(config, "remote-continuous") as client:
            yield str(client.base_url)


@pytest.mark.slow
def test_requests_arriving_apart_wait_for_their_own_windows_only(remote_service):
    """8 requests of 4 sequential windows each, arriving a fraction of a call apart: with one engine
    batch at a time, a window arriving during a batch waited for all of it (up to 2 calls a window;
    under a lock of one window at a time, 8 times as long)."""
    body = {"query": "why do cats purr", "documents": [f"passage {i} about cats" for i in range(10)]}

    async def scenario() -> list[float]:
        async with httpx.AsyncClient(base_url=remote_service, timeout=60) as client:
            async def one(delay_s: float) -> float:
                await asyncio.sleep(delay_s)
                started = time.perf_counter()
                response = await client.post("/native/rerank", json=body)
                assert response.status_code == 200 and len(response.json()["windows"]) == 4, response.text
                return time.perf_counter() - started

            await one(0)  # warm-up
            return list(await asyncio.gather(*(one(0.3 * CALL_S * i) for i in range(8))))

    latencies = asyncio.run(scenario())
    assert max(latencies) < 5 * CALL_S, [f"{x / CALL_S:.2f} calls" for x in latencies]

"""A model replica's death loses no request: the ingress sends what the dead replica held to another one, and
with none left answers 503 with Retry-After, never 500.

Real local Ray Serve, real HTTP on 127.0.0.1; the replicas' engine is the OpenAI-compatible backend on a
scripted model (tests/scripted_model.py: known rankings, 0.3 s a window). A replica is killed as a
preempted or OOM-killed one is: SIGKILL to its process. One Serve instance for the module, two apps on
it: two model replicas, and one.
"""
from __future__ import annotations

import asyncio
import os
import re
import signal
import time

import httpx
import psutil
import pytest

from reasonrank.ports import free_port
from serve.config import ServeConfig
from tests.scripted_model import (DOCS, MORE_DOCS, QUERY, expected_order, fixed_replicas, scripted_model,
                                  scripted_serve_config)

pytestmark = pytest.mark.slow

# App names (and route prefixes), unique to this run: replicas are found by their process titles, which
# another test run on the same machine must not match.
TWO, ONE = f"two-{os.getpid()}", f"one-{os.getpid()}"
APPS = {TWO: 2, ONE: 1}  # app → model replicas
REPLICA_WAIT_S = 1.0  # the single-replica app: how long a request waits for a replica before its 503
BODY = {"query": QUERY, "documents": DOCS + MORE_DOCS}
EXPECTED = expected_order(len(DOCS + MORE_DOCS))


@pytest.fixture(scope="module")
def service(ray_cluster):
    from ray import serve

    from serve.app import build_app

    with scripted_model(latency_s=0.3) as model:
        port = free_port()
        serve.start(proxy_location="HeadOnly", http_options={"host": "127.0.0.1", "port": port})
        try:
            for name, replicas in APPS.items():
                config = ServeConfig.model_validate(scripted_serve_config(
                    model.base_url, deployment=fixed_replicas(replicas), ingress={"replica_wait_s": REPLICA_WAIT_S}))
                serve.run(build_app(config), name=name, route_prefix=f"/{name}")
            with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as client:
                yield client, model
        finally:
            serve.shutdown()


def _replicas(app: str) -> list[psutil.Process]:
    return [p for p in psutil.process_iter(["cmdline"])
            if f"ServeReplica:{app}:Reranker" in " ".join(p.info["cmdline"] or [])]


def _kill_one_replica(app: str) -> int:
    victim = _replicas(app)[0]
    os.kill(victim.pid, signal.SIGKILL)
    return victim.pid


def _metric(name: str, **tags: str) -> float:
    """Sum of a Prometheus series over the tag sets that carry `tags`, from this node's Ray metrics endpoint."""
    import ray

    here = ray.get_runtime_context().get_node_id()  # the session may hold other nodes, dead ones too
    port = next(n["MetricsExportPort"] for n in ray.nodes() if n["NodeID"] == here)
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    total = 0.0
    for labels, value in re.findall(rf"^{re.escape(name)}\{{([^}}]*)\}} ([0-9.eE+-]+)$", text, re.MULTILINE):
        if all(f'{k}="{v}"' in labels for k, v in tags.items()):
            total += float(value)
    return total


async def _clients(base_url: str, path: str, clients: int, requests_each: int, model, app: str):
    """`clients` clients sending `requests_each` requests back to back; one replica of `app` killed once the
    model holds a window of most clients' requests (the replica then holds requests in the middle of a
    window). Returns every (status, retry-after, body) and the killed process id."""
    answers = []

    async def client_loop(client):
        for _ in range(requests_each):
            r = await client.post(path, json=BODY)
            body = r.json() if r.headers.get("content-type") == "application/json" else r.text
            answers.append((r.status_code, r.headers.get("retry-after"), body))

    async with httpx.AsyncClient(base_url=base_url, timeout=60) as client:
        loops = asyncio.gather(*(client_loop(client) for _ in range(clients)))
        await asyncio.sleep(1.0)  # past the first windows, which start together
        while model.in_flight < clients - 1:
            await asyncio.sleep(0.01)
        killed = _kill_one_replica(app)
        await loops
    return answers, killed


def _wait_for_replicas(app: str, count: int, timeout_s: float = 90) -> None:
    deadline = time.monotonic() + timeout_s
    while len(_replicas(app)) != count:
        assert time.monotonic() < deadline, f"{app} did not get back to {count} replicas"
        time.sleep(0.5)


def test_a_replica_killed_while_it_holds_requests_loses_none(service):
    assert len(_replicas(TWO)) == 2
    retried_before = _metric("ray_reasonrank_replica_retries_total")
    service, model = service
    # 8 clients, 3 requests each (three 0.3 s windows a request): the router spreads them over both replicas
    answers, killed = asyncio.run(_clients(str(service.base_url), f"/{TWO}/v2/rerank", 8, 3, model, TWO))
    assert not psutil.pid_exists(killed) or psutil.Process(killed).status() == psutil.STATUS_ZOMBIE
    assert [status for status, _, _ in answers] == [200] * 24, [a for a in answers if a[0] != 200]
    assert all([x["index"] for x in body["results"]] == EXPECTED for _, _, body in answers)
    deadline = time.monotonic() + 45  # Ray exports metrics every few seconds
    while _metric("ray_reasonrank_replica_retries_total") <= retried_before:
        assert time.monotonic() < deadline, "no call was counted as sent again: the killed replica held none"
        time.sleep(1)
    _wait_for_replicas(TWO, 2)


def test_the_only_replica_killed_gives_503_with_retry_after_never_500(service):
    service, model = service
    answers, _ = asyncio.run(_clients(str(service.base_url), f"/{ONE}/v2/rerank", 4, 2, model, ONE))
    statuses = [status for status, _, _ in answers]
    assert 500 not in statuses and set(statuses) <= {200, 503}, statuses
    unavailable = [(retry_after, body) for status, retry_after, body in answers if status == 503]
    assert unavailable, "the requests the killed replica held were not answered 503"
    assert all(retry_after == "10" and body["message"].startswith("no live model replica: ")
               for retry_after, body in unavailable), unavailable
    # those the replica held name its death; those sent after it, that no replica took them
    held = [body for _, body in unavailable if "the model replica holding it was lost (replica_died)" in body["message"]]
    assert len(held) >= 3, unavailable
    failed = _metric("ray_reasonrank_requests_failed_total", cause="no_live_replica", status="503")
    deadline = time.monotonic() + 120  # the replacement starts; from then on every request is answered
    while (r := service.post(f"/{ONE}/v2/rerank", json=BODY)).status_code != 200:
        assert r.status_code == 503 and r.headers["retry-after"] == "10", r.text
        assert time.monotonic() < deadline, "the replacement replica never served"
    assert [x["index"] for x in r.json()["results"]] == EXPECTED
    after = [service.post(f"/{ONE}/v2/rerank", json=BODY).status_code for _ in range(3)]
    assert after == [200, 200, 200]
    deadline = time.monotonic() + 45
    while failed < len(unavailable):
        assert time.monotonic() < deadline, "the 503s were not counted by cause"
        time.sleep(1)
        failed = _metric("ray_reasonrank_requests_failed_total", cause="no_live_replica", status="503")

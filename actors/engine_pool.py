"""Generation engines as Ray actors, and a pool of them that is itself an `Engine`.

`EnginePool` splits each batch into contiguous, balanced chunks, one per replica, runs them concurrently
and concatenates the results, so the output order (prompt-major, n samples per prompt) is the same as one
engine's. Anything written against `Engine` (`rerank`, the labeler, rollouts) takes a pool unchanged.
The tokenizer is loaded locally, so passage truncation needs no round trip to an actor.
"""
from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import ray
from ray.exceptions import RayError

from reasonrank.config import EngineConfig
from reasonrank.engines import Engine, Generation, Messages, SamplingParams, build_engine, load_tokenizer

log = logging.getLogger(__name__)

# The actor process is the engine's own: vLLM's engine core runs in it rather than in two more processes
# (engine core + worker), which starts faster, shuts down in a moment and leaves no shared memory behind.
IN_PROCESS_VLLM = {"env_vars": {"VLLM_ENABLE_V1_MULTIPROCESSING": "0"}}


class EngineReplicaError(RuntimeError):
    """An engine replica failed (to start, to generate, to load weights); the message names which."""


class EngineActor:
    """One engine in its own Ray worker process; Ray-wrapped by `EnginePool` with its resources."""

    def __init__(self, config: EngineConfig):
        self.engine = build_engine(config)

    def ready(self) -> bool:
        return True

    def generate(self, batch: list[Messages], params: SamplingParams) -> list[Generation]:
        return self.engine.generate(batch, params)

    def update_weights(self, weights: Mapping[str, Any] | str, version: int) -> None:
        self.engine.update_weights(weights, version)

    def init_broadcast_group(self, master_address: str, master_port: int, rank_offset: int,
                             world_size: int) -> None:
        self.engine.init_broadcast_group(master_address, master_port, rank_offset, world_size)

    def update_weights_from_broadcast(self, specs: list[tuple[str, str, tuple[int, ...]]], version: int) -> None:
        self.engine.update_weights_from_broadcast(specs, version)

    def close(self) -> None:
        self.engine.close()


def balanced_spans(n: int, parts: int) -> list[tuple[int, int]]:
    """`parts` contiguous (start, end) spans covering range(n), sizes differing by at most one."""
    base, extra = divmod(n, parts)
    spans, start = [], 0
    for i in range(parts):
        end = start + base + (i < extra)
        spans.append((start, end))
        start = end
    return spans


class EnginePool(Engine):
    name = "pool"

    def __init__(self, config: EngineConfig, replicas: int = 1, num_cpus_per_replica: float = 1.0,
                 num_gpus_per_replica: float = 0.0):
        if replicas < 1:
            raise ValueError(f"an engine pool needs at least one replica, got {replicas}")
        remote_actor = ray.remote(EngineActor)
        options = dict(num_cpus=num_cpus_per_replica, num_gpus=num_gpus_per_replica, runtime_env=IN_PROCESS_VLLM)
        self.actors = [remote_actor.options(**options).remote(config) for _ in range(replicas)]
        self.config = config
        self.weights_version = 0
        try:
            self._gather("start", [(i, actor.ready.remote()) for i, actor in enumerate(self.actors)])
        except EngineReplicaError:
            self.close()
            raise
        self._tokenizer = load_tokenizer(config)

    @property
    def tokenizer(self) -> Any | None:
        return self._tokenizer

    def generate(self, batch: list[Messages], params: SamplingParams) -> list[Generation]:
        calls = [(replica, self.actors[replica].generate.remote(batch[start:end], params.from_prompt(start)))
                 for replica, (start, end) in enumerate(balanced_spans(len(batch), len(self.actors)))
                 if end > start]
        return [gen for chunk in self._gather("generate", calls) for gen in chunk]

    def update_weights(self, weights: Mapping[str, Any] | str | Path, version: int) -> None:
        """Push the same weights to every replica (the state dict goes through the object store once)."""
        payload = str(weights) if isinstance(weights, (str, Path)) else ray.put(dict(weights))
        self._gather("update weights", [(i, actor.update_weights.remote(payload, version))
                                        for i, actor in enumerate(self.actors)])
        self.weights_version = version

    def _gather(self, what: str, calls: list[tuple[int, ray.ObjectRef]]) -> list[Any]:
        """Results in call order; the first failure is raised naming its replica."""
        results = []
        for replica, ref in calls:
            try:
                results.append(ray.get(ref))
            except RayError as e:
                raise EngineReplicaError(f"engine replica {replica} of {len(self.actors)} "
                                         f"({self.config.backend}, {self.config.model}) failed to {what}: {e}") from e
        return results

    def close(self) -> None:
        """Shut every replica's engine down (its processes and shared memory), then end the actors."""
        actors, self.actors = self.actors, []
        for replica, actor in enumerate(actors):
            try:
                ray.get(actor.close.remote(), timeout=120)
            except RayError as e:
                log.warning("engine replica %d did not shut down cleanly: %s", replica, e)
            ray.kill(actor)

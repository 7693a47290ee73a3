"""Generation engines as Ray actors, and a pool of them that is itself an `Engine`.

Each replica is an async actor keeping many prompts in flight on its engine (which batches them
continuously). `EnginePool.agenerate` deals each prompt to the replica with the fewest prompts in flight
at that moment, so a replica that drew long generations gets fewer new ones; cancelling the caller cancels
the prompt on its replica. `generate` (the synchronous batch) deals a batch's prompts the same way and
returns them in batch order, each seeded as one engine would seed it. Anything written against `Engine`
(the strategy driver, the labeler, rollouts) takes a pool unchanged. The tokenizer is loaded locally, so
passage truncation needs no round trip to an actor.
"""
from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import ray
from ray.exceptions import RayError

from reasonrank.config import EngineConfig
from reasonrank.engines import Engine, Generation, Messages, SamplingParams, build_engine, load_tokenizer
from reasonrank.engines.base import EngineInputError
from reasonrank.engines.weight_pieces import WEIGHT_PIECE_BYTES

log = logging.getLogger(__name__)


class EngineReplicaError(RuntimeError):
    """An engine replica failed (to start, to generate, to load weights); the message names which."""


class EngineActor:
    """One engine in its own Ray worker process; Ray-wrapped by `EnginePool` with its resources.

    An async actor: its event loop awaits many prompts at once. What blocks (a batch call, a weight load,
    shutting down) runs in a thread, so the loop keeps serving the prompts in flight meanwhile."""

    def __init__(self, config: EngineConfig):
        self.engine = build_engine(config)

    async def ready(self) -> bool:
        return True

    async def agenerate(self, messages: Messages, params: SamplingParams) -> list[Generation]:
        return await self.engine.agenerate(messages, params)

    async def generate(self, batch: list[Messages], params: SamplingParams) -> list[Generation]:
        return await asyncio.to_thread(self.engine.generate, batch, params)

    async def update_weights(self, weights: Mapping[str, Any] | str, version: int,
                             piece_bytes: int = WEIGHT_PIECE_BYTES) -> None:
        await asyncio.to_thread(self.engine.update_weights, weights, version, piece_bytes)

    async def init_broadcast_group(self, master_address: str, master_port: int, rank_offset: int,
                                   world_size: int) -> None:
        await asyncio.to_thread(self.engine.init_broadcast_group, master_address, master_port, rank_offset,
                                world_size)

    async def update_weights_from_broadcast(self, specs: list[tuple[str, str, tuple[int, ...]]],
                                            version: int) -> None:
        await asyncio.to_thread(self.engine.update_weights_from_broadcast, specs, version)

    async def close(self) -> None:
        await asyncio.to_thread(self.engine.close)


class EnginePool(Engine):
    name = "pool"

    def __init__(self, config: EngineConfig, replicas: int = 1, num_cpus_per_replica: float = 1.0,
                 num_gpus_per_replica: float = 0.0):
        if replicas < 1:
            raise ValueError(f"an engine pool needs at least one replica, got {replicas}")
        remote_actor = ray.remote(EngineActor)
        options = dict(num_cpus=num_cpus_per_replica, num_gpus=num_gpus_per_replica)
        self.actors = [remote_actor.options(**options).remote(config) for _ in range(replicas)]
        self.config = config
        self.weights_version = 0
        self._in_flight = [0] * replicas
        try:
            self._gather("start", [(i, actor.ready.remote()) for i, actor in enumerate(self.actors)])
        except EngineReplicaError:
            self.close()
            raise
        self._tokenizer = load_tokenizer(config)

    @property
    def tokenizer(self) -> Any | None:
        return self._tokenizer

    def windows_in_flight(self) -> int:
        return sum(self._in_flight)

    async def agenerate(self, messages: Messages, params: SamplingParams) -> list[Generation]:
        replica = min(range(len(self.actors)), key=self._in_flight.__getitem__)
        self._in_flight[replica] += 1
        ref = self.actors[replica].agenerate.remote(messages, params)
        try:
            generations = await ref
        except asyncio.CancelledError:
            ray.cancel(ref)  # the replica's coroutine is cancelled: its engine aborts the prompt
            raise
        except EngineInputError:  # raised by Ray as a subclass of the cause: the prompt's fault, not the replica's
            raise
        except RayError as e:
            raise self._replica_error(replica, "generate", e) from e
        finally:
            self._in_flight[replica] -= 1
        for generation in generations:
            generation.replica = replica
        return generations

    def update_weights(self, weights: Mapping[str, Any] | str | Path, version: int) -> None:
        """Push the same weights to every replica (the state dict goes through the object store once)."""
        payload = str(weights) if isinstance(weights, (str, Path)) else ray.put(dict(weights))
        self._gather("update weights", [(i, actor.update_weights.remote(payload, version))
                                        for i, actor in enumerate(self.actors)])
        self.weights_version = version

    def _replica_error(self, replica: int, what: str, error: Exception) -> EngineReplicaError:
        return EngineReplicaError(f"engine replica {replica} of {len(self.actors)} "
                                  f"({self.config.backend}, {self.config.model}) failed to {what}: {error}")

    def _gather(self, what: str, calls: list[tuple[int, ray.ObjectRef]]) -> list[Any]:
        """Results in call order; the first failure is raised naming its replica."""
        results = []
        for replica, ref in calls:
            try:
                results.append(ray.get(ref))
            except RayError as e:
                raise self._replica_error(replica, what, e) from e
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

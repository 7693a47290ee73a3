"""One generation interface for every backend (vLLM, transformers, OpenAI-compatible endpoints).

The unit of work is one prompt: `await engine.agenerate(messages, params)` returns its `params.n` samples.
Whoever awaits it may cancel it at any time (a request past its deadline, a client that went away); the
backend then aborts the prompt and frees its slot. Backends keep many prompts in flight and batch them
continuously (vLLM's async engine), concurrently (OpenAI-compatible endpoints) or by whatever is queued
(transformers), so a caller submits a prompt the moment it is ready and never waits for anyone else's.

`generate(batch, params)` is the synchronous batch call training code uses (rollouts, the teacher): the
prompts of the batch submitted together, results prompt-major. A backend reports, per output, the token
counts and the latency of the call it came from, so that cost can be logged per window without knowing
the backend.
"""
from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections.abc import Awaitable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

Messages = list[dict[str, str]]
T = TypeVar("T")


@dataclass(frozen=True)
class SamplingParams:
    temperature: float = 0.0  # 0 = greedy
    top_p: float = 1.0
    max_new_tokens: int = 3072  # the reasoning-token budget: the whole response, reasoning included
    n: int = 1  # samples per prompt (GRPO's group size)
    seed: int | None = None
    stop: tuple[str, ...] = ()
    logprobs: bool = False  # return the sampled tokens' log-probabilities (rollouts)
    ignore_eos: bool = False  # generate exactly max_new_tokens (benchmarks that fix response lengths)

    def sample_seed(self, prompt_index: int, sample_index: int = 0) -> int | None:
        """The seed of sample j of prompt i in a batch: seed + i·n + j, so no two samples of a batch share a
        random stream (one seed per prompt would give sample j of every prompt the same noise, and a step's
        groups would err together). vLLM numbers a request's samples seed + j itself."""
        return None if self.seed is None else self.seed + prompt_index * self.n + sample_index

    def from_prompt(self, start: int) -> SamplingParams:
        """These params for prompt `start` of a batch (or the part of a batch that begins there): its seeds
        go on from the batch's, so prompts submitted one by one, to one engine or to several, sample what
        one batch call would sample (on engines that seed each sample: vLLM, OpenAI-compatible;
        transformers draws a batch from one seed)."""
        return replace(self, seed=self.sample_seed(start))


@dataclass
class Generation:
    text: str  # the response in the model's own format: `<think>…</think><answer>…</answer>`
    prompt_tokens: int
    completion_tokens: int
    latency_s: float  # wall time from submitting the prompt to its last token
    finish_reason: str = "stop"  # "stop" or "length" (cut by max_new_tokens)
    reasoning: str | None = None  # reasoning the server returned apart from the content, if any
    token_ids: list[int] | None = None  # sampled token ids (local engines)
    logprobs: list[float] | None = None  # their log-probabilities, when SamplingParams.logprobs
    # what the backend knows of the call (None/empty where it does not apply)
    answer: str | None = None  # the content apart from the reasoning (OpenAI-compatible endpoints)
    usage_estimated: bool = False  # the server gave no token usage: counts estimated at 4 characters a token
    retries: list[str] = field(default_factory=list)  # reasons of the failed attempts before this one
    weights_version: int | None = None  # the weights that generated it (local vLLM engines)
    replica: int | None = None  # the engine replica that generated it (an engine pool)
    # what the window driver adds (reasonrank.strategies)
    in_flight: int = 1  # windows the engine had in flight when this one was submitted, itself included
    round: int = 0  # the query's sequential round this window ran in (0: first)
    forced_answer: bool = False  # the reasoning hit its budget and the answer was forced after it


class EngineInputError(ValueError):
    """The engine refused a prompt for what it is (too long for the context, …), not because it failed:
    the caller's input is at fault, and the engine is as healthy as before."""


class Engine(ABC):
    """A text generator over chat conversations."""

    name: str = "engine"

    @abstractmethod
    async def agenerate(self, messages: Messages, params: SamplingParams) -> list[Generation]:
        """The `params.n` samples of one prompt. Cancelling the awaiting task aborts the prompt."""

    async def agenerate_batch(self, batch: list[Messages], params: SamplingParams) -> list[Generation]:
        """Every prompt of `batch` submitted at once; `len(batch) * params.n` generations, prompt-major."""
        per_prompt = await asyncio.gather(*(self.agenerate(messages, params.from_prompt(i))
                                            for i, messages in enumerate(batch)))
        return [gen for samples in per_prompt for gen in samples]

    def generate(self, batch: list[Messages], params: SamplingParams) -> list[Generation]:
        """`agenerate_batch`, for synchronous callers."""
        return run_sync(self.agenerate_batch(batch, params)) if batch else []

    @property
    def tokenizer(self) -> Any | None:
        """The model's tokenizer where the backend has one locally (None for remote endpoints)."""
        return None

    def windows_in_flight(self) -> int:
        """Prompts submitted and not yet answered (what the engine is generating or has queued)."""
        return 0

    async def release_loop(self) -> None:
        """Release what the engine opened for the running event loop (HTTP sessions); it opens them again
        if that loop calls it later."""

    def close(self) -> None:
        """Release the engine's processes and memory."""


def run_sync(coroutine: Awaitable[T]) -> T:
    """Run `coroutine` to completion from synchronous code, also when called inside a running event loop
    (an async server or actor), where it runs on a loop of its own in a helper thread."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coroutine)
    with ThreadPoolExecutor(1) as thread:
        return thread.submit(asyncio.run, coroutine).result()

"""One generation interface for every backend (vLLM, transformers, OpenAI-compatible endpoints).

The teacher (synthesize), rollouts (grpo), evaluate and serve all call `Engine.generate` with a batch of
chat conversations. A backend reports, per output, the token counts and the latency of the call it came
from, so that cost can be logged per window without knowing the backend.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field, replace
from typing import Any

Messages = list[dict[str, str]]


@dataclass(frozen=True)
class SamplingParams:
    temperature: float = 0.0  # 0 = greedy
    top_p: float = 1.0
    max_new_tokens: int = 3072  # the reasoning-token budget: the whole response, reasoning included
    n: int = 1  # samples per prompt (GRPO's group size)
    seed: int | None = None
    stop: tuple[str, ...] = ()
    logprobs: bool = False  # return the sampled tokens' log-probabilities (rollouts)

    def sample_seed(self, prompt_index: int, sample_index: int = 0) -> int | None:
        """The seed of sample j of prompt i in a batch: seed + i·n + j, so no two samples of a batch share a
        random stream (one seed per prompt would give sample j of every prompt the same noise, and a step's
        groups would err together). vLLM numbers a request's samples seed + j itself."""
        return None if self.seed is None else self.seed + prompt_index * self.n + sample_index

    def from_prompt(self, start: int) -> SamplingParams:
        """These params for the part of a batch that begins at prompt `start` (a batch split over engines): its
        seeds go on from the batch's, so the parts sample what one engine would sample for the whole batch
        (on engines that seed each sample: vLLM, OpenAI-compatible; transformers draws a batch from one seed)."""
        return replace(self, seed=self.sample_seed(start))


@dataclass
class Generation:
    text: str  # the response in the model's own format: `<think>…</think><answer>…</answer>`
    prompt_tokens: int
    completion_tokens: int
    latency_s: float  # wall time of the engine call this output came from
    finish_reason: str = "stop"  # "stop" or "length" (cut by max_new_tokens)
    reasoning: str | None = None  # reasoning the server returned apart from the content, if any
    token_ids: list[int] | None = None  # sampled token ids (local engines)
    logprobs: list[float] | None = None  # their log-probabilities, when SamplingParams.logprobs
    extra: dict[str, Any] = field(default_factory=dict)


class Engine(ABC):
    """A text generator over chat conversations.

    `generate` returns `len(batch) * params.n` generations, prompt-major: the n samples of prompt 0 first.
    """

    name: str = "engine"

    @abstractmethod
    def generate(self, batch: list[Messages], params: SamplingParams) -> list[Generation]:
        ...

    @property
    def tokenizer(self) -> Any | None:
        """The model's tokenizer where the backend has one locally (None for remote endpoints)."""
        return None

    def close(self) -> None:
        """Release the engine's processes and memory."""

"""One sampled response and everything the learner and the logs need about it."""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Rollout:
    sample_id: str  # the RL row (RLSample.id) whose prompt was answered
    group: int  # the prompt's index within the step: responses of one group share a baseline
    prompt_ids: list[int]  # the prompt as the engine tokenised it
    response_ids: list[int]  # the sampled tokens, end-of-turn token included when generation stopped there
    rollout_logprobs: list[float]  # the engine's log-probabilities of those tokens (vLLM's raw: before temperature)
    text: str  # the decoded response, what the reward reads
    finish_reason: str  # "stop" or "length"
    weights_version: int  # the version of the weights the engine sampled with
    reward: float = 0.0
    reward_terms: dict[str, float | str] = field(default_factory=dict)  # ndcg, recall, rbo, outcome
    advantage: float = 0.0
    index: int = 0  # which of its group's responses this is (0 … G-1): with `group`, its key in the step
    passages_cut_to: int | None = None  # the prompt was too long for the engine: passages cut to this many tokens

    @property
    def key(self) -> tuple[int, int]:
        return self.group, self.index

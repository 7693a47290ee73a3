"""RL prompts cut to what the rollout engine can take.

vLLM refuses a prompt of `max_model_len` tokens or more, and that refusal would fail the whole step. A
prompt longer than its budget (`max_model_len - max_new_tokens`: the response keeps its full room) is cut
instead: its passages get the largest per-passage token budget, below the configured one, with which the
prompt fits. The label stays valid (the same passages in the same order, only shorter); the caller records
which rows were cut.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from reasonrank.data.training_sets import RLSample
from reasonrank.prompt import PassageTruncator, render


@dataclass(frozen=True)
class FittedPrompt:
    messages: list[dict[str, str]]
    ids: list[int]  # the rendered prompt's tokens, as the engine will see them
    cut_to: int | None = None  # the per-passage token budget it was cut to; None: not cut


def fit_prompt(sample: RLSample, tokenizer: Any, passage_max_tokens: int | None, max_prompt_tokens: int
               ) -> FittedPrompt:
    """`sample`'s prompt within `max_prompt_tokens`, cut as the module says when it has to be."""
    def build(budget: int | None) -> FittedPrompt:
        messages = sample.messages(PassageTruncator(tokenizer, budget))
        ids = tokenizer(render(tokenizer, messages), add_special_tokens=False)["input_ids"]
        return FittedPrompt(messages, ids, budget if budget != passage_max_tokens else None)

    prompt = build(passage_max_tokens)
    if len(prompt.ids) <= max_prompt_tokens:
        return prompt
    longest = max((len(tokenizer.encode(p, add_special_tokens=False)) for p in sample.passages), default=0)
    lo, hi, best = 0, min(longest, passage_max_tokens or longest) - 1, None
    while lo <= hi:  # the largest budget that fits (the prompt grows with the budget)
        mid = (lo + hi) // 2
        candidate = build(mid)
        if len(candidate.ids) <= max_prompt_tokens:
            best, lo = candidate, mid + 1
        else:
            hi = mid - 1
    if best is None:
        raise ValueError(f"RL row {sample.id}: its prompt does not fit in {max_prompt_tokens} tokens (the engine's "
                         f"max_model_len less max_new_tokens) even with empty passages; raise max_model_len")
    return best

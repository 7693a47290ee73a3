"""Reasoning budgets and the direct mode: how much a window may think, for every strategy and every engine.

A window function (`EngineCall` → `Generation`) is wrapped once, whatever engine is behind it:
- `think`: the window as the model was trained, reasoning then answering within the sampling's
  `max_new_tokens` (a response cut there keeps its window's order, as the parser says);
- `budget`: at most `budget_tokens` new tokens; a response cut before its answer is closed is continued with
  its reasoning closed for it (`</think><answer>` appended to what it wrote) for up to `answer_tokens` more,
  so an answer always comes ("budget forcing", Muennighoff et al., 2025, s1);
- `none`: the model's turn starts with an empty reasoning (`<think></think><answer>`), so it answers at once,
  within `answer_tokens`.

The continuation is a trailing assistant message, which every engine continues instead of answering: the
local engines render it with the chat template's `continue_final_message`, OpenAI-compatible servers are
asked to continue it (vLLM's `continue_final_message`). A forced window is two engine calls and reports
both: their prompt and completion tokens and their times added up.
"""
from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import replace

from reasonrank.config import ReasoningConfig
from reasonrank.engines.base import Generation
from reasonrank.strategies.base import EngineCall

WindowFn = Callable[[EngineCall], Awaitable[Generation]]

THINK_CLOSE, ANSWER_OPEN, ANSWER_CLOSE = "</think>", "<answer>", "</answer>"
DIRECT_ANSWER = "<think>" + THINK_CLOSE + ANSWER_OPEN  # an empty reasoning, and the answer opened


def forced_answer_prefix(text: str) -> str:
    """`text` (a response cut before its answer closed) with its reasoning closed and its answer opened."""
    if THINK_CLOSE not in text:
        return text + THINK_CLOSE + ANSWER_OPEN
    if ANSWER_OPEN not in text.split(THINK_CLOSE, 1)[1]:
        return text + ANSWER_OPEN
    return text  # the answer itself was cut: it goes on


def reasoned(window: WindowFn, reasoning: ReasoningConfig) -> WindowFn:
    """`window` with `reasoning`'s mode and budget applied to every call."""
    if reasoning.mode == "think":
        return window

    async def continued(call: EngineCall, prefix: str) -> Generation:
        messages = [*call.messages, {"role": "assistant", "content": prefix}]
        gen = await window(replace(call, messages=messages, max_new_tokens=reasoning.answer_tokens))
        return replace(gen, text=prefix + gen.text, token_ids=None, logprobs=None)

    async def budgeted(call: EngineCall) -> Generation:
        first = await window(replace(call, max_new_tokens=reasoning.budget_tokens))
        if first.finish_reason != "length" or ANSWER_CLOSE in first.text:
            return first
        answer = await continued(call, forced_answer_prefix(first.text))
        return replace(answer, prompt_tokens=first.prompt_tokens + answer.prompt_tokens,
                       completion_tokens=first.completion_tokens + answer.completion_tokens,
                       latency_s=first.latency_s + answer.latency_s, reasoning=None,
                       in_flight=first.in_flight, forced_answer=True)

    async def direct(call: EngineCall) -> Generation:
        return await continued(call, DIRECT_ANSWER)

    return budgeted if reasoning.mode == "budget" else direct

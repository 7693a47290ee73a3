"""The Engine backend for any OpenAI-compatible chat endpoint: a DeepSeek-R1 API, a vLLM server, a teacher.

Many requests are kept in flight on one event loop (the `openai` async client), bounded by
`max_concurrency` and by a client-side rate limit (requests/s, tokens/min). A failed call is retried with
exponential backoff and jitter when the failure is transient: 429 (waiting what Retry-After asks),
5xx, timeouts, dropped connections and malformed bodies (not JSON, no choices, no content, or a content
the caller's `validate` rejects). After the last attempt `TeacherCallFailed` says why. Client errors
(400, 401, 404 …) are not retried.

A trailing assistant message is the start of the model's turn (a forced answer, an empty reasoning): the
server is asked to continue it (`continue_final_message`, as vLLM's server names it) and returns what follows.

Reasoning models return their reasoning either apart (`reasoning_content`, DeepSeek-R1 style, or
`reasoning`) or inline as `<think>…</think>` at the start of the content; both are normalised to
`Generation.reasoning` plus `Generation.text = "<think>{reasoning}</think>{answer}"`, the model format
the parser and the SFT set use.
"""
from __future__ import annotations

import asyncio
import json
import re
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import httpx2
import openai
from tenacity import AsyncRetrying, retry_if_exception, stop_after_attempt, wait_random_exponential

from reasonrank.config import EngineConfig
from reasonrank.engines.base import Engine, Generation, Messages, SamplingParams, run_sync
from reasonrank.engines.rate_limit import RateLimiter

_INLINE_THINK = re.compile(r"^\s*<think>(?P<reasoning>.*?)</think>(?P<content>.*)$", re.DOTALL)
_NO_KEY_NEEDED = "EMPTY"  # what local OpenAI-compatible servers (vLLM, the simulated teacher) accept


class MalformedResponse(Exception):
    """A 2xx answer that cannot be used: not JSON, no choices, no content, or rejected by `validate`."""


class TeacherCallFailed(RuntimeError):
    """A chat call that failed for good; `reason` is a short category, `attempts` the calls made."""

    def __init__(self, reason: str, message: str, attempts: int):
        super().__init__(f"{reason} after {attempts} attempt(s): {message}")
        self.reason = reason
        self.message = message
        self.attempts = attempts


def failure_reason(exc: BaseException) -> str:
    """A short category for a failed call, as recorded in the errors dataset."""
    if isinstance(exc, openai.RateLimitError):
        return "rate_limited"
    if isinstance(exc, openai.APITimeoutError):
        return "timeout"
    if isinstance(exc, openai.APIConnectionError):
        return "connection"
    if isinstance(exc, openai.APIStatusError):
        return "server_error" if exc.status_code >= 500 else f"http_{exc.status_code}"
    if isinstance(exc, (MalformedResponse, openai.APIResponseValidationError, json.JSONDecodeError)):
        return "malformed"
    return type(exc).__name__


def is_transient(exc: BaseException) -> bool:
    reason = failure_reason(exc)
    return reason in ("rate_limited", "timeout", "connection", "server_error", "malformed")


def retry_after_s(exc: BaseException) -> float | None:
    """Seconds a 429 asks to wait (`retry-after-ms` or `Retry-After` in seconds), if it says."""
    if not isinstance(exc, openai.RateLimitError):
        return None
    headers = exc.response.headers
    for name, scale in (("retry-after-ms", 1e-3), ("retry-after", 1.0)):
        value = headers.get(name)
        if value is None:
            continue
        try:
            return max(0.0, float(value) * scale)
        except ValueError:
            continue  # an HTTP date: rare for APIs; fall back to backoff
    return None


class _BackoffHonouringRetryAfter:
    """tenacity wait: Retry-After when a 429 gives one, else jittered exponential backoff; capped."""

    def __init__(self, base_s: float, cap_s: float):
        self.cap_s = cap_s
        self.backoff = wait_random_exponential(multiplier=base_s, max=cap_s)

    def __call__(self, retry_state) -> float:
        exc = retry_state.outcome.exception()
        asked = retry_after_s(exc) if exc is not None else None
        return min(asked, self.cap_s) if asked is not None else self.backoff(retry_state)


def split_reasoning(content: str | None, reasoning: str | None) -> tuple[str | None, str]:
    """(reasoning, answer content) from what the server returned, whichever way it carried reasoning."""
    content = content or ""
    if reasoning:
        return reasoning, content
    inline = _INLINE_THINK.match(content)
    if inline:
        return inline.group("reasoning"), inline.group("content")
    return None, content


@dataclass
class _LoopState:
    client: openai.AsyncOpenAI
    slots: asyncio.Semaphore


class OpenAIEngine(Engine):
    """An OpenAI-compatible chat endpoint behind the Engine interface."""

    name = "openai"

    def __init__(self, config: EngineConfig):
        if config.backend != "openai":
            raise ValueError(f"OpenAIEngine needs engine.backend 'openai', got {config.backend!r}")
        self.config = config
        self._api_key = config.api_key()
        if self._api_key is None:
            if config.base_url is None:
                raise ValueError(f"no API key: set the environment variable {config.api_key_env} "
                                 "(or engine.base_url for a local server that needs none)")
            self._api_key = _NO_KEY_NEEDED
        self.limiter = RateLimiter(config.requests_per_s, config.tokens_per_min)
        self._in_flight = 0
        # The async client and the concurrency bound belong to one event loop each.
        self._per_loop: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopState] = \
            weakref.WeakKeyDictionary()

    def __repr__(self) -> str:  # never show the key
        return f"OpenAIEngine(model={self.config.model!r}, base_url={self.config.base_url!r})"

    def _state(self) -> _LoopState:
        loop = asyncio.get_running_loop()
        state = self._per_loop.get(loop)
        if state is None:
            slots = self.config.max_concurrency
            transport = openai.DefaultAioHttpClient(
                timeout=self.config.request_timeout_s,
                limits=httpx2.Limits(max_connections=slots, max_keepalive_connections=slots))
            client = openai.AsyncOpenAI(api_key=self._api_key, base_url=self.config.base_url,
                                        timeout=self.config.request_timeout_s, max_retries=0, http_client=transport)
            state = self._per_loop[loop] = _LoopState(client, asyncio.Semaphore(self.config.max_concurrency))
        return state

    def windows_in_flight(self) -> int:
        return self._in_flight

    async def agenerate(self, messages: Messages, params: SamplingParams) -> list[Generation]:
        """The n samples of one prompt, each a request of its own seeded by `SamplingParams.sample_seed`."""
        samples = [replace(params, n=1, seed=params.sample_seed(0, j)) for j in range(params.n)]
        return list(await asyncio.gather(*(self.complete(messages, sample) for sample in samples)))

    async def complete(self, messages: Messages, params: SamplingParams,
                       validate: Callable[[Generation], None] | None = None) -> Generation:
        """One chat completion, retried as the module says. `validate(gen)` may raise MalformedResponse to
        have an unusable answer retried like a malformed body. `Generation.retries` lists the reasons of the
        failed attempts before the one that succeeded."""
        if params.n != 1:
            raise ValueError("complete makes one sample; agenerate() makes n per prompt")
        state = self._state()
        failures: list[str] = []
        retrying = AsyncRetrying(
            stop=stop_after_attempt(self.config.max_retries + 1),
            wait=_BackoffHonouringRetryAfter(self.config.retry_backoff_s, self.config.retry_max_backoff_s),
            retry=retry_if_exception(is_transient),
            before_sleep=lambda rs: failures.append(failure_reason(rs.outcome.exception())),
            reraise=True,
        )
        self._in_flight += 1
        try:
            async for attempt in retrying:
                with attempt:
                    async with state.slots:
                        gen = await self._call_once(state.client, messages, params)
                    if validate is not None:
                        validate(gen)
        except Exception as exc:  # every failure ends here, categorised
            attempts = len(failures) + 1
            raise TeacherCallFailed(failure_reason(exc), _describe(exc), attempts) from exc
        finally:
            self._in_flight -= 1
        return replace(gen, retries=failures)

    async def _call_once(self, client: openai.AsyncOpenAI, messages: Messages,
                         params: SamplingParams) -> Generation:
        estimate = sum(len(m["content"]) for m in messages) // 4
        await self.limiter.acquire(estimate + params.max_new_tokens)
        started = time.perf_counter()
        kwargs: dict[str, Any] = dict(model=self.config.model, messages=messages, temperature=params.temperature,
                                      top_p=params.top_p, max_tokens=params.max_new_tokens)
        if params.seed is not None:
            kwargs["seed"] = params.seed
        if params.stop:
            kwargs["stop"] = list(params.stop)
        if params.logprobs:
            kwargs["logprobs"] = True
        if messages and messages[-1]["role"] == "assistant":  # the start of the model's turn: continue it
            kwargs["extra_body"] = {"continue_final_message": True, "add_generation_prompt": False}
        response = await client.chat.completions.create(**kwargs)
        latency = time.perf_counter() - started
        gen = _to_generation(response, latency, estimate)
        self.limiter.settle(estimate + params.max_new_tokens, gen.prompt_tokens + gen.completion_tokens)
        return gen

    def generate(self, batch: list[Messages], params: SamplingParams) -> list[Generation]:
        """All prompts' samples concurrently (at most max_concurrency in flight); prompt-major order.
        Each sample is a request of its own, seeded by `SamplingParams.sample_seed` when a seed is given."""
        async def run_all() -> list[Generation]:
            try:
                return await self.agenerate_batch(batch, params)
            finally:
                await self.release_loop()

        return run_sync(run_all())

    async def release_loop(self) -> None:
        state = self._per_loop.pop(asyncio.get_running_loop(), None)
        if state is not None:
            await state.client.close()

    def close(self) -> None:
        """Close the HTTP clients still open, each on its own loop. On the thread that runs a client's loop
        (a server shutting down) the close is scheduled there, not waited for: waiting would block that loop."""
        try:
            current = asyncio.get_running_loop()
        except RuntimeError:
            current = None
        for loop, state in list(self._per_loop.items()):
            if loop.is_closed():
                continue
            if loop is current:
                loop.create_task(state.client.close())
            elif loop.is_running():
                asyncio.run_coroutine_threadsafe(state.client.close(), loop).result(timeout=10)
            else:
                loop.run_until_complete(state.client.close())
        self._per_loop.clear()


def _describe(exc: BaseException) -> str:
    if isinstance(exc, openai.APIStatusError):
        return f"HTTP {exc.status_code}: {str(exc)[:300]}"
    return f"{type(exc).__name__}: {str(exc)[:300]}"


def _to_generation(response: Any, latency: float, prompt_estimate: int) -> Generation:
    try:
        choice = response.choices[0]
        message = choice.message
    except (AttributeError, IndexError, TypeError) as exc:
        raise MalformedResponse(f"no choices in the response ({type(exc).__name__})") from None
    separate = getattr(message, "reasoning_content", None) or getattr(message, "reasoning", None)
    if message.content is None and not separate:
        raise MalformedResponse("the response has neither content nor reasoning")
    reasoning, answer = split_reasoning(message.content, separate)
    text = answer if reasoning is None else f"<think>{reasoning}</think>{answer}"
    usage = getattr(response, "usage", None)
    if usage is not None:
        prompt_tokens, completion_tokens = usage.prompt_tokens, usage.completion_tokens
    else:  # some servers omit usage: estimate (about 4 characters a token) and say so
        prompt_tokens, completion_tokens = prompt_estimate, len(text) // 4
    logprobs = None
    if getattr(choice, "logprobs", None) is not None and choice.logprobs.content:
        logprobs = [t.logprob for t in choice.logprobs.content]
    return Generation(text=text, prompt_tokens=prompt_tokens, completion_tokens=completion_tokens,
                      latency_s=latency, finish_reason=choice.finish_reason or "stop", reasoning=reasoning,
                      logprobs=logprobs, answer=answer, usage_estimated=usage is None)

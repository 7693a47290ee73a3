"""Strategies that cut sequential rounds (top-down partitioning, parallel blocks), rounds of windows in the one
driver, reasoning budgets and the direct mode.

The window function here is a scripted model (a test double): it ranks each window's passages by relevance
grades the test chooses (ties in the window's order), so every strategy's ranking, calls and sequential rounds are known
in advance, and the rankings are far from the first stage's order.
"""
from __future__ import annotations

import asyncio
import re

import pytest

from reasonrank.config import ConfigError, ReasoningConfig, parse_config
from reasonrank.engines.base import Generation
from reasonrank.parsing import format_answer
from reasonrank.prompt import PassageTruncator, render
from reasonrank.strategies import ParallelBlocks, SlidingWindow, StrategyConfig, TopDownPartition, drive
from reasonrank.strategies.base import EngineCall, RankingStrategy
from reasonrank.strategies.parallel_blocks import block_design
from reasonrank.strategies.reasoning import forced_answer_prefix
from reasonrank.types import Candidate, Query, RankedList, RerankRequest

_PASSAGE = re.compile(r"^\[(\d+)\] (.*)$", re.MULTILINE)
_DOC = re.compile(r"doc(\d+)")


def request(n: int) -> RerankRequest:
    return RerankRequest.of(Query("q", "the query"), [Candidate(f"d{i}", f"doc{i} text") for i in range(n)])


def docs(call: EngineCall) -> list[int]:
    """The documents a window shows, in its order."""
    return [int(_DOC.search(text).group(1)) for _, text in _PASSAGE.findall(call.messages[1]["content"])]


class Scripted:
    """A model that ranks each window by `grades` (stable), and records the windows it was asked for."""

    def __init__(self, grades: dict[int, int], answer=None):
        self.grades, self.calls = grades, []
        self.answer = answer or (lambda call, order: f"<think>judged</think><answer>{format_answer(order)}</answer>")

    async def __call__(self, call: EngineCall) -> Generation:
        self.calls.append(call)
        shown = docs(call)
        order = sorted(range(len(shown)), key=lambda i: -self.grades.get(shown[i], 0))
        await asyncio.sleep(0)
        return Generation(self.answer(call, order), prompt_tokens=10 * len(shown), completion_tokens=len(shown),
                          latency_s=0.0)


def run(strategy: RankingStrategy, n: int, window, reasoning: ReasoningConfig | None = None) -> RankedList:
    if reasoning is not None:
        strategy.reasoning = reasoning
    return asyncio.run(drive(strategy, request(n), PassageTruncator(None, None), window))


def ranked_ids(ranked: RankedList) -> list[int]:
    return [int(c.docid[1:]) for c in ranked.candidates]


def test_tdpart_top_100_windows_of_20_in_three_rounds_and_seven_calls():
    grades = {3: 9, 12: 8, 47: 7, 60: 6, 95: 5, 71: 4}  # scattered down the list
    model = Scripted(grades)
    ranked = run(TopDownPartition(window_size=20, depth=100, cutoff=10), 100, model)
    expected = sorted(range(100), key=lambda i: -grades.get(i, 0))
    assert ranked_ids(ranked) == expected != list(range(100))
    assert (ranked.calls, ranked.rounds) == (7, 3)  # the paper's setting: 1 + 5 + 1 windows in 3 rounds
    assert [w.round for w in ranked.windows] == [0, 1, 1, 1, 1, 1, 2]
    assert [len(docs(call)) for call in model.calls] == [20] * 7  # the last chunk of 4 is topped up to 20
    assert all(docs(call)[0] == 9 for call in model.calls[1:6])  # the pivot opens every partition window
    sliding = run(SlidingWindow(window_size=20, step=10, depth=100), 100, Scripted(grades))
    assert (sliding.calls, sliding.rounds) == (9, 9)
    assert ranked_ids(sliding)[:6] == expected[:6]


def test_tdpart_stops_after_two_rounds_when_nothing_beats_the_pivot():
    ranked = run(TopDownPartition(window_size=20, depth=100, cutoff=10), 100, Scripted({5: 3, 2: 1}))
    assert ranked_ids(ranked) == [5, 2, 0, 1, 3, 4, *range(6, 100)]
    assert (ranked.calls, ranked.rounds) == (6, 2)


def reverse(call, order):
    """A model that ranks every window bottom to top (the pivot, shown first, always last)."""
    return f"<think>judged</think><answer>{format_answer(order[::-1])}</answer>"


def test_tdpart_windows_are_all_of_window_size_and_fillers_count_once():
    """Fillers (shown only to fill a window) keep the verdict of their own window: none appears twice."""
    model = Scripted({}, answer=reverse)
    ranked = run(TopDownPartition(window_size=10, depth=14, cutoff=5), 14, model)
    # [9..0] → pivot 4; {4, 5 3 2 1 0 (fillers), 10 11 12 13} → all four beat it; the nine candidates with
    # the pivot as filler → reversed
    assert [docs(call) for call in model.calls][1:] == [[4, 5, 3, 2, 1, 0, 10, 11, 12, 13],
                                                        [9, 8, 7, 6, 5, 13, 12, 11, 10, 4]]
    assert ranked_ids(ranked) == [10, 11, 12, 13, 5, 6, 7, 8, 9, 4, 3, 2, 1, 0]
    model = Scripted({}, answer=reverse)
    ranked = run(TopDownPartition(window_size=10, depth=50, cutoff=5), 50, model)
    assert [len(docs(call)) for call in model.calls] == [10] * 7
    assert docs(model.calls[5]) == [4, 41, 42, 43, 44, 45, 46, 47, 48, 49]  # 41-45 fill the last chunk
    down = lambda a, b: list(range(a, b - 1, -1))  # noqa: E731
    assert ranked_ids(ranked) == [14, 15, 16, 17, 18, 5, 6, 7, 8, 9, *down(13, 10), *down(27, 19),
                                  *down(36, 28), *down(45, 37), *down(49, 46), 4, 3, 2, 1, 0]


def test_tdpart_over_one_window_is_one_call_and_keeps_the_tail():
    strategy = TopDownPartition(window_size=10, depth=8, cutoff=5)
    ranked = run(strategy, 12, Scripted({7: 1, 10: 5}))
    assert ranked_ids(ranked) == [7, 0, 1, 2, 3, 4, 5, 6, 8, 9, 10, 11]  # 10 and 11 lie below depth
    assert (ranked.calls, ranked.rounds) == (1, 1)


def test_parallel_blocks_one_round_of_overlapping_blocks_aggregated_by_wins():
    assert block_design(8, 4) == [[0, 1, 2, 3], [4, 5, 6, 7], [0, 2, 4, 6], [1, 3, 5, 7]]
    grades = {6: 2, 3: 1}
    ranked = run(ParallelBlocks(window_size=4, depth=8), 8, Scripted(grades))
    # wins over 6 comparisons each: 3 and 6 win all (3 first: earlier), 0 wins 4, 1 3, 4 and 5 2, 2 1, 7 none
    assert ranked_ids(ranked) == [3, 6, 0, 1, 4, 5, 2, 7]
    assert (ranked.calls, ranked.rounds) == (4, 1)
    refined = run(ParallelBlocks(window_size=4, depth=8, rerank_top=True), 8, Scripted(grades))
    assert ranked_ids(refined) == [6, 3, 0, 1, 4, 5, 2, 7]
    assert (refined.calls, refined.rounds) == (5, 2)


def test_parallel_blocks_top_100_windows_of_20_is_one_round():
    grades = {42: 3, 97: 2}
    model = Scripted(grades)
    ranked = run(ParallelBlocks(window_size=20, depth=100), 100, model)
    # 0 meets neither relevant passage and wins both its blocks, as 42 does: a win rate ranks block winners
    assert ranked_ids(ranked)[:2] == [0, 42] and 97 in ranked_ids(ranked)[:20]
    assert (ranked.calls, ranked.rounds) == (10, 1)
    assert max(len(docs(call)) for call in model.calls) <= 20
    assert sorted(d for call in model.calls for d in docs(call)) == sorted(list(range(100)) * 2)
    refined = run(ParallelBlocks(window_size=20, depth=100, rerank_top=True), 100, Scripted(grades))
    assert ranked_ids(refined)[:3] == [42, 97, 0]
    assert (refined.calls, refined.rounds) == (11, 2)


@pytest.mark.parametrize("strategy", [TopDownPartition(window_size=10, depth=50, cutoff=5),
                                      ParallelBlocks(window_size=10, depth=50, rerank_top=True)])
def test_malformed_answers_still_give_a_complete_ranking(strategy):
    garbage = Scripted({}, answer=lambda call, order: "<think>[3] [3] [99] no answer here")
    ranked = run(strategy, 60, garbage)
    assert sorted(ranked_ids(ranked)) == list(range(60))
    assert not any(w.well_formed for w in ranked.windows)


def test_a_round_runs_its_windows_at_once():
    """Every window of the round is in flight before any returns (each waits for all six)."""
    in_flight, everyone = [], asyncio.Event()

    async def window(call: EngineCall) -> Generation:
        in_flight.append(call)
        if len(in_flight) == 6:
            everyone.set()
        await asyncio.wait_for(everyone.wait(), 5)
        return await Scripted({})(call)

    ranked = run(ParallelBlocks(window_size=10, depth=25), 25, window)
    assert (ranked.calls, ranked.rounds) == (6, 1)


def test_forced_answer_prefix_closes_what_was_cut():
    assert forced_answer_prefix("<think>half a thou") == "<think>half a thou</think><answer>"
    assert forced_answer_prefix("<think>done</think>") == "<think>done</think><answer>"
    assert forced_answer_prefix("<think>done</think><answer>[2] >") == "<think>done</think><answer>[2] >"


def budget_model(grades: dict[int, int]):
    """Reasons at length (cut by any budget under 50 tokens); continued after `<answer>`, it ranks by grade."""
    scripted = Scripted(grades)

    async def window(call: EngineCall) -> Generation:
        gen = await scripted(call)
        if call.messages[-1]["role"] == "assistant":
            assert call.messages[-1]["content"].endswith("</think><answer>")
            answer = gen.text.split("<answer>", 1)[1]
            return Generation(answer, prompt_tokens=gen.prompt_tokens + 30, completion_tokens=len(docs(call)),
                              latency_s=0.0)
        limit = call.max_new_tokens or 10_000
        if limit < 50:
            return Generation("<think>" + "hmm " * limit, prompt_tokens=gen.prompt_tokens, completion_tokens=limit,
                              latency_s=0.0, finish_reason="length")
        return gen

    window.calls = scripted.calls
    return window


def test_a_window_cut_by_its_budget_answers_with_the_forced_answer():
    grades = {4: 2, 1: 1}
    model = budget_model(grades)
    budget = ReasoningConfig(mode="budget", budget_tokens=20, answer_tokens=64)
    ranked = run(SlidingWindow(window_size=5, step=5, depth=5), 5, model, budget)
    assert ranked_ids(ranked) == [4, 1, 0, 2, 3]  # the forced answer's ranking, not the window's order
    (window,) = ranked.windows
    assert window.forced_answer and window.well_formed and window.response.startswith("<think>hmm")
    assert (window.prompt_tokens, window.completion_tokens) == (50 + 80, 20 + 5)  # both calls counted
    assert [c.max_new_tokens for c in model.calls] == [20, 64]
    assert (ranked.calls, ranked.rounds) == (1, 1)
    # the same cut without budget forcing has no answer: the window keeps its order
    cut = run(SlidingWindow(window_size=5, step=5, depth=5), 5, _capped(budget_model(grades), 20))
    assert ranked_ids(cut) == [0, 1, 2, 3, 4] and not cut.windows[0].well_formed


def _capped(window, tokens: int):
    async def call(c: EngineCall) -> Generation:
        return await window(EngineCall(c.messages, c.start, c.end, tokens))
    return call


def test_a_budget_the_reasoning_fits_is_one_call():
    model = budget_model({2: 1})
    ranked = run(SlidingWindow(window_size=5, step=5, depth=5), 5, model,
                 ReasoningConfig(mode="budget", budget_tokens=100))
    assert ranked_ids(ranked) == [2, 0, 1, 3, 4]
    assert len(model.calls) == 1 and not ranked.windows[0].forced_answer


def test_no_reasoning_mode_prefills_an_empty_reasoning():
    seen = []

    async def window(call: EngineCall) -> Generation:
        seen.append(call)
        return Generation("[3] > [1] > [2]</answer>", prompt_tokens=40, completion_tokens=9, latency_s=0.0)

    ranked = run(SlidingWindow(window_size=3, step=3, depth=3), 3, window, ReasoningConfig(mode="none"))
    assert ranked_ids(ranked) == [2, 0, 1]
    (call,) = seen
    assert call.messages[-1] == {"role": "assistant", "content": "<think></think><answer>"}
    assert call.max_new_tokens == ReasoningConfig().answer_tokens
    assert ranked.windows[0].well_formed and ranked.windows[0].response.startswith("<think></think><answer>[3]")


def test_the_chat_template_continues_a_started_turn(tiny_model_dir):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    messages = [{"role": "user", "content": "rank"}, {"role": "assistant", "content": "<think></think><answer>"}]
    assert render(tokenizer, messages).endswith("<|im_start|>assistant\n<think></think><answer>")


def test_configs_name_the_wrong_key():
    with pytest.raises(ConfigError, match="budget_tokens"):
        parse_config({"reasoning": {"mode": "budget"}}, StrategyConfig)
    with pytest.raises(ConfigError, match="budget_tokens"):
        parse_config({"reasoning": {"mode": "none", "budget_tokens": 10}}, StrategyConfig)
    with pytest.raises(ConfigError, match="cutoff"):
        parse_config({"name": "tdpart", "window_size": 10, "cutoff": 10}, StrategyConfig)
    built = parse_config({"name": "tdpart", "window_size": 10, "depth": 50}, StrategyConfig).build()
    assert (built.window_size, built.cutoff, built.depth) == (10, 5, 50)
    assert parse_config({"name": "parallel_blocks", "rerank_top": True}, StrategyConfig).build().rerank_top
    direct = parse_config({"name": "tdpart", "reasoning": {"mode": "none"}}, StrategyConfig).build()
    assert direct.reasoning.mode == "none" and StrategyConfig().build().reasoning.mode == "think"


def test_a_local_engine_forces_the_answer_after_its_budget(tiny_model_dir):
    """The transformers engine continues the started turn: the window's response is what the model wrote within
    its budget, the forced `</think><answer>`, then the model's answer; both calls' tokens are counted."""
    from reasonrank.config import EngineConfig
    from reasonrank.engines.base import SamplingParams
    from reasonrank.engines.hf_engine import TransformersEngine
    from reasonrank.strategies import rank_requests

    engine = TransformersEngine(EngineConfig(backend="transformers", model=str(tiny_model_dir), dtype="float32"))
    try:
        strategy = parse_config({"window_size": 4, "step": 4, "depth": 4, "reasoning": {
            "mode": "budget", "budget_tokens": 6, "answer_tokens": 24}}, StrategyConfig).build()
        (ranked,) = rank_requests(engine, strategy, [request(4)], SamplingParams(max_new_tokens=256))
    finally:
        engine.close()
    (window,) = ranked.windows
    assert window.forced_answer and "</think><answer>" in window.response
    assert 6 < window.completion_tokens <= 6 + 24
    assert sorted(ranked_ids(ranked)) == [0, 1, 2, 3]

"""Ranking strategies: the paper's window schedule and cross-query batching.

The engine here is a scripted test double (it reverses every window and records each call), used only to
see which windows a strategy asks for and how `rerank` batches them; the real engines run the same
strategies in tests/test_engine_pool.py, tests/test_evaluate.py and tests/test_submit.py.
"""
from __future__ import annotations

import re

import pytest

from reasonrank.engines.base import Engine, Generation, SamplingParams
from reasonrank.parsing import format_answer
from reasonrank.strategies import OneShot, SlidingWindow, build_strategy, rerank, window_spans
from reasonrank.types import Candidate, Query, RerankRequest


class ReversingEngine(Engine):
    """Answers every listwise prompt with its passages in reverse order; records batch sizes."""

    def __init__(self, malformed_every: int = 0):
        self.calls: list[int] = []
        self.malformed_every = malformed_every
        self.seen = 0

    def generate(self, batch, params: SamplingParams) -> list[Generation]:
        self.calls.append(len(batch))
        out = []
        for messages in batch:
            self.seen += 1
            n = len(re.findall(r"^\[\d+\] ", messages[-1]["content"], flags=re.M))
            text = f"<think>reversing</think><answer>{format_answer(list(reversed(range(n))))}</answer>"
            if self.malformed_every and self.seen % self.malformed_every == 0:
                text = "<think>I ran out of tok"
            out.append(Generation(text, prompt_tokens=10, completion_tokens=5, latency_s=0.0))
        return out


def request(qid: str, n: int) -> RerankRequest:
    return RerankRequest.of(Query(qid, f"query {qid}"), [Candidate(f"{qid}-d{i}", f"passage {i}") for i in range(n)])


def test_paper_schedule_is_nine_windows_bottom_to_top():
    spans = window_spans(100, 20, 10)
    assert spans == [(80, 100), (70, 90), (60, 80), (50, 70), (40, 60), (30, 50), (20, 40), (10, 30), (0, 20)]


@pytest.mark.parametrize("n", [1, 7, 20, 21, 25, 37, 100, 133])
def test_any_depth_ends_at_the_top_and_covers_every_position(n):
    spans = window_spans(n, 20, 10)
    assert spans[0][1] == n and spans[-1][0] == 0
    assert all(e - s <= 20 for s, e in spans)
    assert set().union(*(range(s, e) for s, e in spans)) == set(range(n))


def test_sliding_window_result_matches_manual_replay():
    req = request("q", 30)
    [ranked] = rerank(ReversingEngine(), SlidingWindow(20, 10, depth=30), [req], SamplingParams())
    expected = list(req.candidates)
    for s, e in window_spans(30, 20, 10):
        expected[s:e] = expected[s:e][::-1]
    assert ranked.candidates == expected
    assert [(w.start, w.end) for w in ranked.windows] == window_spans(30, 20, 10)


def test_windows_of_all_queries_share_each_engine_call():
    engine = ReversingEngine()
    reqs = [request("a", 100), request("b", 20), request("c", 45)]
    results = rerank(engine, SlidingWindow(), reqs, SamplingParams())
    # a: 9 windows, b: 1, c: 4 → rounds of 3, 2, 2, 2, 1, 1, 1, 1, 1
    assert engine.calls == [3, 2, 2, 2, 1, 1, 1, 1, 1]
    assert [r.qid for r in results] == ["a", "b", "c"]


def test_depth_leaves_the_tail_untouched_and_nothing_is_lost():
    req = request("q", 50)
    engine = ReversingEngine(malformed_every=3)
    [ranked] = rerank(engine, SlidingWindow(20, 10, depth=40), [req], SamplingParams())
    assert sorted(c.docid for c in ranked.candidates) == sorted(c.docid for c in req.candidates)
    assert ranked.candidates[40:] == list(req.candidates[40:])
    assert [w.well_formed for w in ranked.windows] == [True, True, False]


def test_one_shot_is_a_single_window_over_the_list():
    engine = ReversingEngine()
    req = request("q", 12)
    [ranked] = rerank(engine, OneShot(depth=None), [req], SamplingParams())
    assert engine.calls == [1]
    assert ranked.candidates == list(reversed(req.candidates))
    assert ranked.windows[0].strategy == "one_shot"


def test_unknown_strategy_names_the_known_ones():
    with pytest.raises(ValueError, match="sliding_window"):
        build_strategy("bubble")


def test_rerank_refuses_group_sampling():
    with pytest.raises(ValueError, match="n must be 1"):
        rerank(ReversingEngine(), SlidingWindow(), [request("q", 3)], SamplingParams(n=4))

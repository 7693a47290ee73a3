"""Ranking strategies: the paper's window schedule and the continuous driver.

The engine here is a scripted test double (it ranks every window's passages by a fixed preference for their
content, after a delay the test chooses per query, and records when each window starts and ends), used only to see which windows a strategy asks for
and when the driver submits them; the real engines run the same strategies in tests/test_engine_pool.py,
tests/test_continuous.py, tests/test_evaluate.py and tests/test_submit.py.
"""
from __future__ import annotations

import asyncio
import re

import pytest

from reasonrank.engines.base import Engine, Generation, SamplingParams
from reasonrank.parsing import format_answer
from reasonrank.strategies import OneShot, SlidingWindow, build_strategy, rank_requests, window_spans
from reasonrank.types import Candidate, Query, RerankRequest


def preference(i: int) -> int:
    """How much the scripted model likes "passage i": distinct for i < 101, and no self-inverse order (a
    reversal would be its own inverse, and an index/rank swap would rank the same)."""
    return (37 * i) % 101


def preferred(candidates) -> list:
    return sorted(candidates, key=lambda c: -preference(int(c.text.split()[1])))


class ScriptedEngine(Engine):
    """Answers every listwise prompt with its passages ordered by `preference`, after `delay_s(query text)`;
    records ("start"|"end", query text) events and the most windows it ever had in flight."""

    def __init__(self, malformed_every: int = 0, delay_s=lambda query: 0.0):
        self.events: list[tuple[str, str]] = []
        self.malformed_every, self.delay_s = malformed_every, delay_s
        self.seen = self.in_flight = self.peak = 0

    def windows_in_flight(self) -> int:
        return self.in_flight

    async def agenerate(self, messages, params: SamplingParams) -> list[Generation]:
        query = re.search(r"Search Query: (.*)\.", messages[-1]["content"]).group(1)
        self.seen += 1
        seen = self.seen
        self.events.append(("start", query))
        self.in_flight += 1
        self.peak = max(self.peak, self.in_flight)
        try:
            await asyncio.sleep(self.delay_s(query))
        finally:
            self.in_flight -= 1
        self.events.append(("end", query))
        shown = [int(i) for i in re.findall(r"^\[\d+\] passage (\d+)", messages[-1]["content"], flags=re.M)]
        order = sorted(range(len(shown)), key=lambda k: -preference(shown[k]))
        text = f"<think>by preference</think><answer>{format_answer(order)}</answer>"
        if self.malformed_every and seen % self.malformed_every == 0:
            text = "<think>I ran out of tok"
        return [Generation(text, prompt_tokens=10, completion_tokens=5, latency_s=0.0)]


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
    [ranked] = rank_requests(ScriptedEngine(), SlidingWindow(20, 10, depth=30), [req], SamplingParams())
    expected = list(req.candidates)
    for s, e in window_spans(30, 20, 10):
        expected[s:e] = preferred(expected[s:e])
    assert ranked.candidates == expected
    assert [(w.start, w.end) for w in ranked.windows] == window_spans(30, 20, 10)


def test_a_query_advances_the_moment_its_own_window_returns():
    """No rounds: while query a's one slow window runs, query b goes through all 4 of its windows."""
    engine = ScriptedEngine(delay_s=lambda query: 0.3 if query == "query a" else 0.01)
    reqs = [request("a", 20), request("b", 45)]
    results = rank_requests(engine, SlidingWindow(), reqs, SamplingParams())
    assert engine.events[:2] == [("start", "query a"), ("start", "query b")]
    assert engine.events.index(("end", "query a")) == len(engine.events) - 1  # b's 4 windows all ended first
    assert [e for e in engine.events if e[1] == "query b"] == [("start", "query b"), ("end", "query b")] * 4
    assert [r.qid for r in results] == ["a", "b"]  # request order, whatever the finishing order
    assert [w.in_flight for w in results[1].windows] == [2, 2, 2, 2]  # a's window was in flight meanwhile


def test_windows_in_flight_are_bounded():
    engine = ScriptedEngine(delay_s=lambda query: 0.01)
    reqs = [request(str(i), 30) for i in range(10)]
    done: list[str] = []
    results = rank_requests(engine, SlidingWindow(20, 10, depth=30), reqs, SamplingParams(), max_windows_in_flight=3,
                     on_query_done=lambda ranked: done.append(ranked.qid))
    assert engine.peak == 3
    assert sorted(done) == sorted(r.query.qid for r in reqs) and len(results) == 10


def test_depth_leaves_the_tail_untouched_and_nothing_is_lost():
    req = request("q", 50)
    engine = ScriptedEngine(malformed_every=3)
    [ranked] = rank_requests(engine, SlidingWindow(20, 10, depth=40), [req], SamplingParams())
    assert sorted(c.docid for c in ranked.candidates) == sorted(c.docid for c in req.candidates)
    assert ranked.candidates[40:] == list(req.candidates[40:])
    assert ranked.candidates[:40] != list(req.candidates[:40])
    assert [w.well_formed for w in ranked.windows] == [True, True, False]


def test_one_shot_is_a_single_window_over_the_list():
    engine = ScriptedEngine()
    req = request("q", 12)
    [ranked] = rank_requests(engine, OneShot(depth=None), [req], SamplingParams())
    assert engine.seen == 1
    assert [c.docid for c in ranked.candidates] == [f"q-d{i}" for i in (8, 5, 2, 10, 7, 4, 1, 9, 6, 3, 11, 0)]
    assert ranked.windows[0].strategy == "one_shot"


def test_unknown_strategy_names_the_known_ones():
    with pytest.raises(ValueError, match="sliding_window"):
        build_strategy("bubble")


def test_rerank_refuses_group_sampling():
    with pytest.raises(ValueError, match="n must be 1"):
        rank_requests(ScriptedEngine(), SlidingWindow(), [request("q", 3)], SamplingParams(n=4))

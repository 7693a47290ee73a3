"""Iterative elimination (R1-Ranker's IRanker): prompt, parser, strategy, per-step reward.

Most tests use `EliminatingEngine`, a scripted test double: it reads each passage's hidden grade from the
prompt and names the lowest-graded one, so the expected ranking is known exactly and every engine call is
recorded; a real model could not be steered that way. One test runs the real transformers engine on the
tiny model, whose untrained output is garbage, to see a complete permutation come back anyway.
"""
from __future__ import annotations

import re

import pytest

from reasonrank.config import ConfigError, parse_config
from reasonrank.elimination import elimination_messages, parse_elimination
from reasonrank.elimination_reward import EliminationRewardWeights, elimination_step_reward
from reasonrank.engines.base import Engine, Generation, SamplingParams
from reasonrank.prompt import PassageTruncator
from reasonrank.strategies import IterativeElimination, StrategyConfig, build_strategy, rank_requests
from reasonrank.types import Candidate, Query, RerankRequest

_PASSAGE = re.compile(r"^\[(\d+)\] grade (\d+)", flags=re.M)


class EliminatingEngine(Engine):
    """Names the passage with the lowest `grade N` among those shown; every `malformed_every`-th answer is
    cut-off reasoning instead. Records how many passages each prompt showed, and which query it was for."""

    def __init__(self, malformed_every: int = 0):
        self.shown: list[int] = []
        self.queries: list[str] = []
        self.malformed_every = malformed_every

    async def agenerate(self, messages, params: SamplingParams) -> list[Generation]:
        passages = [(int(k), int(g)) for k, g in _PASSAGE.findall(messages[-1]["content"])]
        self.shown.append(len(passages))
        self.queries.append(re.search(r"query (\w+)", messages[-1]["content"]).group(1))
        worst = min(passages, key=lambda p: p[1])[0]
        text = f"<think>[{passages[0][0]}] looks fine</think><answer>[{worst}]</answer>"
        if self.malformed_every and len(self.shown) % self.malformed_every == 0:
            text = "<think>I ran out of tok"
        return [Generation(text, prompt_tokens=10, completion_tokens=5, latency_s=0.0)]


def request(qid: str, grades: list[int]) -> RerankRequest:
    return RerankRequest.of(Query(qid, f"query {qid}"),
                            [Candidate(f"{qid}-d{i}", f"grade {g}") for i, g in enumerate(grades)])


def docids(ranked) -> list[str]:
    return [c.docid for c in ranked.candidates]


# --- prompt and parser ---------------------------------------------------------------------------------

def test_prompt_numbers_the_remaining_passages_and_asks_for_the_least_relevant():
    system, user = elimination_messages("what is [2]?", ["alpha [7]", "beta", "gamma"])
    assert "LEAST relevant" in system["content"] and "<answer>" in system["content"]
    assert re.findall(r"^\[(\d+)\] (.*)$", user["content"], flags=re.M) == [
        ("1", "alpha (7)"), ("2", "beta"), ("3", "gamma")]
    assert "what is (2)?" in user["content"] and "[2]?" not in user["content"]


@pytest.mark.parametrize("response, index, named, well_formed", [
    ("<think>[1] is on topic</think><answer>[3]</answer>", 2, True, True),
    ("<think>x</think><answer> [ 2 ] </answer>", 1, True, True),
    ("<think>x</think><answer>[２]</answer>", 1, True, True),  # full-width digit
    ("<answer>[1]</answer>", 0, True, False),  # no reasoning
    ("<think>x</think><answer>[2] and again [2]</answer>", 1, True, False),
    ("<think>x</think><answer>[3] > [1]</answer>", 3, False, False),  # two candidates: none named
    ("<think>x</think><answer>[9]</answer>", 3, False, False),  # out of range
    ("<think>x</think><answer>[2] [9]</answer>", 3, False, False),
    ("<think>passage [1] is off topic, I ran out of tok", 3, False, False),  # reasoning is never read
    ("", 3, False, False),
])
def test_parser_names_one_candidate_or_drops_the_last(response, index, named, well_formed):
    parsed = parse_elimination(response, 4)
    assert (parsed.index, parsed.named, parsed.well_formed) == (index, named, well_formed)


def test_parser_refuses_an_empty_list():
    with pytest.raises(ValueError, match="num_remaining"):
        parse_elimination("<answer>[1]</answer>", 0)


# --- strategy ------------------------------------------------------------------------------------------

def test_final_ranking_is_the_reverse_elimination_order():
    grades = [3, 7, 1, 9, 5, 2]
    engine = EliminatingEngine()
    [ranked] = rank_requests(engine, IterativeElimination(depth=None), [request("q", grades)], SamplingParams())
    by_grade = sorted(range(len(grades)), key=lambda i: -grades[i])
    assert docids(ranked) == [f"q-d{i}" for i in by_grade]
    assert engine.shown == [6, 5, 4, 3, 2]  # the remaining candidates only, one fewer each step
    assert [(w.start, w.end) for w in ranked.windows] == [(0, 6), (0, 5), (0, 4), (0, 3), (0, 2)]
    assert all(w.well_formed and w.strategy == "iterative_elimination" for w in ranked.windows)


def test_each_query_steps_on_its_own_and_results_keep_request_order():
    engine = EliminatingEngine()
    reqs = [request("a", [1, 2, 3, 4, 5]), request("b", [2, 1, 3]), request("c", [4])]
    results = rank_requests(engine, IterativeElimination(depth=None), reqs, SamplingParams())
    # a: 4 steps, b: 2, c: none (a single candidate is ranked)
    assert sorted(engine.queries) == ["a", "a", "a", "a", "b", "b"]
    assert [r.qid for r in results] == ["a", "b", "c"]
    assert docids(results[1]) == ["b-d2", "b-d0", "b-d1"] and docids(results[2]) == ["c-d0"]


def test_malformed_steps_drop_the_last_candidate_and_still_give_a_permutation():
    grades = [5, 1, 4, 2, 3]
    engine = EliminatingEngine(malformed_every=2)
    [ranked] = rank_requests(engine, IterativeElimination(depth=None), [request("q", grades)], SamplingParams())
    # step 1 drops d1 (grade 1); step 2 is malformed: drops the last remaining, d4; step 3 drops d3;
    # step 4 malformed: of [d0, d2] drops d2.
    assert docids(ranked) == ["q-d0", "q-d2", "q-d3", "q-d4", "q-d1"]
    assert [w.well_formed for w in ranked.windows] == [True, False, True, False]


def test_depth_leaves_the_tail_untouched_and_stop_at_keeps_the_survivors_in_order():
    req = request("q", [1, 8, 6, 2, 9, 7, 0, 0])
    engine = EliminatingEngine()
    [ranked] = rank_requests(engine, IterativeElimination(depth=6, stop_at=3), [req], SamplingParams())
    assert engine.shown == [6, 5, 4]  # depth - stop_at steps
    # eliminated d0 (1), d3 (2), d2 (6); survivors d1, d4, d5 keep first-stage order; tail as it was
    assert docids(ranked) == ["q-d1", "q-d4", "q-d5", "q-d2", "q-d3", "q-d0", "q-d6", "q-d7"]


def test_passages_are_truncated_once_per_query_not_once_per_step():
    cuts: list[str] = []

    class CountingTruncator(PassageTruncator):
        def __call__(self, text: str) -> str:
            cuts.append(text)
            return text

    engine = EliminatingEngine()
    rank_requests(engine, IterativeElimination(depth=None), [request("q", [1, 2, 3, 4])], SamplingParams(),
           CountingTruncator(None, None))
    assert len(cuts) == 4 and engine.shown == [4, 3, 2]


def test_config_builds_it_and_names_a_wrong_key():
    strategy = parse_config({"name": "iterative_elimination", "depth": 7, "stop_at": 2}, StrategyConfig).build()
    assert isinstance(strategy, IterativeElimination) and (strategy.depth, strategy.stop_at) == (7, 2)
    assert isinstance(build_strategy("iterative_elimination"), IterativeElimination)
    with pytest.raises(ConfigError, match="stop_at"):
        parse_config({"name": "iterative_elimination", "stop_at": 0}, StrategyConfig)
    with pytest.raises(ValueError, match="stop_at"):
        IterativeElimination(stop_at=0)


# --- per-step reward -----------------------------------------------------------------------------------

REMAINING = ["a", "b", "c"]
RELEVANT = {"b"}


@pytest.mark.parametrize("response, reward", [
    ("<think>a is off topic</think><answer>[1]</answer>", 1.0),  # non-relevant removed
    ("<think>x</think>\n<answer> [3] </answer>", 1.0),
    ("<think>x</think><answer>[2]</answer>", 0.0),  # the relevant one removed
    ("<think>x</think><answer>none of them</answer>", -0.5),  # no candidate named
    ("<think>x</think><answer>[3] > [1]</answer>", -0.5),  # two candidates: none named
    ("<think>x</think><answer>[4]</answer>", -0.5),  # not a candidate
    ("<answer>[1]</answer>", 0.0),  # right removal (+1), no reasoning (-1)
    ("<think>x</think><answer>[1]</answer> trailing words", 0.0),
    ("<think>x</think><answer>[2]</answer><answer>[1]</answer>", -1.0),  # relevant removed, tags repeated
    ("<think>[1] is off topic and I ran out of tok", -1.5),  # nothing named (-0.5), format (-1)
])
def test_step_reward_hand_checked(response, reward):
    assert elimination_step_reward(response, REMAINING, RELEVANT) == pytest.approx(reward)


def test_step_reward_weights_are_configurable():
    weights = EliminationRewardWeights(format_ok=0.1, format_bad=-0.1, no_candidate=-2.0)
    assert elimination_step_reward("<think>x</think><answer>[1]</answer>", REMAINING, RELEVANT,
                                   weights) == pytest.approx(1.1)
    assert elimination_step_reward("<think>x</think><answer>[2]</answer>", REMAINING, RELEVANT,
                                   weights) == pytest.approx(0.1)
    assert elimination_step_reward("garbage", REMAINING, RELEVANT, weights) == pytest.approx(-2.1)
    with pytest.raises(ValueError, match="(?i)extra"):
        EliminationRewardWeights(format_good=1.0)


# --- real engine ---------------------------------------------------------------------------------------

@pytest.mark.slow
def test_tiny_model_garbage_still_gives_a_complete_permutation(tiny_model_dir, demo_data):
    from reasonrank.config import EngineConfig
    from reasonrank.engines import build_engine

    dataset = demo_data.load()
    reqs = [r for r in dataset.requests(4)][:2]
    engine = build_engine(EngineConfig(backend="transformers", model=str(tiny_model_dir), dtype="float32"))
    try:
        results = rank_requests(engine, IterativeElimination(depth=None), reqs, SamplingParams(max_new_tokens=8),
                         PassageTruncator(engine.tokenizer, 32))
    finally:
        engine.close()
    for req, ranked in zip(reqs, results, strict=True):
        assert sorted(docids(ranked)) == sorted(c.docid for c in req.candidates)
        assert [w.end for w in ranked.windows] == [4, 3, 2]
        # replaying the parser on the logged responses reproduces the ranking the strategy returned
        remaining, eliminated = [c.docid for c in req.candidates], []
        for w in ranked.windows:
            eliminated.append(remaining.pop(parse_elimination(w.response, len(remaining)).index))
        assert docids(ranked) == remaining + eliminated[::-1]

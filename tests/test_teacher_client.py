"""The OpenAI-compatible engine against the simulated teacher (a test double for DeepSeek-R1), over real
HTTP on 127.0.0.1 with the real `openai` client: reasoning normalisation, retries per failure kind,
Retry-After, client errors, concurrency bound and rate limits. No Ray here."""
from __future__ import annotations

import time

import pytest

from reasonrank.config import EngineConfig
from reasonrank.engines.base import SamplingParams
from reasonrank.engines.openai_engine import OpenAIEngine, TeacherCallFailed, split_reasoning
from reasonrank.engines.rate_limit import RateLimiter, TokenBucket
from reasonrank.parsing import parse_ranking
from reasonrank.prompt import listwise_messages
from reasonrank.teacher.prompts import parse_relevance, pointwise_messages
from reasonrank.teacher.simulated import SimulatedTeacher, SimulationConfig

QUERIES = {"q1": "At what temperature does zorvium melt?"}
CORPUS = {f"d{i}": f"Zorvium fact {i}: it was catalogued in {1800 + i} [{i}] by the survey." for i in range(8)}
CORPUS["d3"] = "Zorvium melts at 277 degrees, as the furnace trials showed."
CORPUS["d6"] = "The melting point of zorvium is 277 degrees."
QRELS = {"q1": {"d3": 1, "d6": 2}}
PARAMS = SamplingParams(max_new_tokens=512)


def _engine(url: str, **overrides) -> OpenAIEngine:
    settings = dict(backend="openai", model="simulated-deepseek-r1", base_url=url, request_timeout_s=5,
                    max_retries=2, retry_backoff_s=0.01, retry_max_backoff_s=1.0)
    return OpenAIEngine(EngineConfig(**{**settings, **overrides}))


def _pointwise(i: int) -> list[dict[str, str]]:
    return pointwise_messages(QUERIES["q1"], CORPUS[f"d{i}"], answer="277 degrees")


def _teacher(**settings) -> SimulatedTeacher:
    return SimulatedTeacher(QUERIES, CORPUS, QRELS, SimulationConfig(**{"noise": 0.0, **settings}))


def test_reasoning_is_normalised_from_reasoning_content_or_inline_think():
    outputs = {}
    for inline in (0.0, 1.0):  # DeepSeek-R1's reasoning_content field vs <think> inside the content
        with _teacher(inline_reasoning=inline) as teacher:
            outputs[inline] = _engine(teacher.base_url).generate(
                [_pointwise(3), _pointwise(0), listwise_messages(QUERIES["q1"], list(CORPUS.values()))], PARAMS)
    for apart, inline in zip(outputs[0.0], outputs[1.0]):
        assert apart.reasoning and apart.reasoning == inline.reasoning
        assert apart.text == inline.text == f"<think>{apart.reasoning}</think>{apart.answer}"
    relevant, irrelevant, ranking = outputs[0.0]
    assert parse_relevance(relevant.text) is True and parse_relevance(irrelevant.text) is False
    parsed = parse_ranking(ranking.text, len(CORPUS))
    assert parsed.well_formed and parsed.order[:2] == [6, 3]  # d6 (grade 2), then d3 (grade 1)
    assert relevant.prompt_tokens > 0 and relevant.completion_tokens > 0


def test_split_reasoning_prefers_the_separate_field_and_keeps_unreasoned_content():
    assert split_reasoning("<answer>Yes</answer>", "because") == ("because", "<answer>Yes</answer>")
    assert split_reasoning("<think>r</think> <answer>No</answer>", None) == ("r", " <answer>No</answer>")
    assert split_reasoning("[2] > [1]", None) == (None, "[2] > [1]")


@pytest.mark.parametrize("kind", ["rate_limited", "server_error", "timeout", "malformed"])
def test_each_transient_fault_is_retried_then_reported_with_its_reason(kind):
    timeout = 1.0 if kind == "timeout" else 10.0  # the hang outlasts a short client timeout
    with _teacher(fail_first=2, fault_kinds=(kind,), retry_after_s=0.0, hang_s=5) as teacher:
        with pytest.raises(TeacherCallFailed) as failed:
            _engine(teacher.base_url, max_retries=1, request_timeout_s=timeout).generate([_pointwise(1)], PARAMS)
        assert failed.value.reason == kind and failed.value.attempts == 2
        assert len(teacher.arrivals) == 2
        # One more attempt allowed: the 3rd call succeeds and says what it retried for.
        [gen] = _engine(teacher.base_url, max_retries=2, request_timeout_s=timeout).generate([_pointwise(2)], PARAMS)
        assert gen.retries == [kind] * 2 and parse_relevance(gen.text) is False


def test_retry_after_of_a_429_is_honoured():
    with _teacher(fail_first=1, fault_kinds=("rate_limited",), retry_after_s=0.6) as teacher:
        [gen] = _engine(teacher.base_url, retry_backoff_s=0.01).generate([_pointwise(3)], PARAMS)
        (first, _), (second, _) = teacher.arrivals
    assert gen.retries == ["rate_limited"]
    assert second - first >= 0.6  # the backoff alone would have waited about 0.01 s


def test_client_errors_are_not_retried():
    with _teacher() as teacher:
        with pytest.raises(TeacherCallFailed) as failed:  # the simulated teacher answers 400 to other prompts
            _engine(teacher.base_url).generate([[{"role": "user", "content": "hello"}]], PARAMS)
        assert failed.value.reason == "http_400" and failed.value.attempts == 1
        assert len(teacher.arrivals) == 1


def test_requests_in_flight_are_bounded_by_max_concurrency():
    with _teacher(latency_s=0.2) as teacher:
        gens = _engine(teacher.base_url, max_concurrency=4).generate([_pointwise(i) for i in range(8)] * 2,
                                                                     PARAMS)
        assert teacher.peak_in_flight == 4
    assert len(gens) == 16 and [parse_relevance(g.text) for g in gens[:8]] == [i in (3, 6) for i in range(8)]


def test_n_samples_per_prompt_come_prompt_major():
    with _teacher() as teacher:
        gens = _engine(teacher.base_url).generate([_pointwise(3), _pointwise(0)], SamplingParams(n=2, seed=1))
    assert [parse_relevance(g.text) for g in gens] == [True, True, False, False]


def test_requests_per_second_limit_spaces_the_requests():
    with _teacher() as teacher:
        engine = _engine(teacher.base_url, requests_per_s=10)
        started = time.monotonic()  # the simulated teacher stamps arrivals with the same clock
        engine.generate([_pointwise(i) for i in range(8)] * 3, PARAMS)
        times = sorted(t for t, _ in teacher.arrivals)
    assert len(times) == 24 and times[-1] - started >= 1.4  # 10/s after a burst of 10: at least 1.4 s


def test_token_bucket_limits_tokens_per_minute_and_charges_real_usage():
    now = [0.0]
    limiter = RateLimiter(tokens_per_min=600, clock=lambda: now[0])  # 10 tokens/s, 600 at most
    assert limiter.tokens.try_take(600) == 0.0
    assert limiter.tokens.try_take(100) == pytest.approx(10.0)  # empty: 100 tokens take 10 s
    now[0] = 10.0
    assert limiter.tokens.try_take(100) == 0.0
    limiter.settle(estimated=100, actual=300)  # the server reported more: the debt is waited out
    assert limiter.tokens.try_take(50) == pytest.approx(25.0)
    small = TokenBucket(rate=1, capacity=5, clock=lambda: 0.0)
    assert small.try_take(5) == 0.0
    assert small.try_take(50) == pytest.approx(5.0)  # more than it holds: waits for a full bucket, not forever


def test_the_api_key_comes_from_the_environment_and_never_shows(monkeypatch):
    monkeypatch.delenv("TEACHER_KEY_FOR_TEST", raising=False)
    config = EngineConfig(backend="openai", model="m", api_key_env="TEACHER_KEY_FOR_TEST")
    with pytest.raises(ValueError, match="TEACHER_KEY_FOR_TEST"):
        OpenAIEngine(config)
    monkeypatch.setenv("TEACHER_KEY_FOR_TEST", "sk-secret-value")
    engine = OpenAIEngine(config)
    assert "sk-secret-value" not in repr(engine) and "sk-secret-value" not in config.model_dump_json()


@pytest.mark.parametrize("response, verdict", [
    ("<think>the passage states it</think><answer>Yes</answer>", True),
    ("<think>off-topic</think><answer> no.</answer>", False),
    ("<think>hmm</think>Relevant", True),
    ("<think>yes, it seems relevant but the budget ran out", None),
    ("<think>x</think><answer>maybe</answer>", None),
])
def test_pointwise_verdict_parser(response, verdict):
    assert parse_relevance(response) is verdict

"""The service's pure parts, without Ray or an engine: scores, reasoning extraction, request validation,
configs."""
from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from reasonrank.config import ConfigError, load_config

from reasonrank.parsing import extract_answer, extract_reasoning
from reasonrank.scores import relevance_score
from serve.errors import validation_message
from serve.config import ServeConfig
from serve.schema import CohereRequest, NativeRequest


def test_relevance_score_strictly_decreasing_in_unit_interval():
    scores = [relevance_score(rank) for rank in range(1000)]
    assert scores[0] == 1.0 and scores[-1] > 0
    assert all(a > b for a, b in zip(scores, scores[1:]))


@pytest.mark.parametrize("text,expected", [
    ("<think>a then b</think><answer>[2] > [1]</answer>", "a then b"),
    ("<think>cut off by the token budget", "cut off by the token budget"),
    ("no tags at all [1] > [2]", None),
])
def test_window_reasoning(text, expected):
    """Every backend returns reasoning inside `<think>` (the OpenAI one folds a server's separate reasoning in)."""
    assert extract_reasoning(text) == expected


def test_window_answer_comes_from_the_parser():
    assert extract_answer("<think>x</think><answer>[2] > [1]</answer>") == "[2] > [1]"
    assert extract_answer("<think>x [2] > [1]") is None


def test_limit_named_in_validation_message():
    with pytest.raises(ValidationError) as e:
        CohereRequest.model_validate({"query": "q", "documents": ["a"] * 4}, context={"max_documents": 3})
    assert validation_message(e.value) == "documents: 4 documents is more than the limit of 3 per request " \
                                          "(limits.max_documents)"


def test_cohere_rank_fields_make_the_text_ranked_in_their_order():
    body = CohereRequest.model_validate({"query": "q", "rank_fields": ["title", "year"], "max_chunks_per_doc": 2,
                                         "priority": 5, "documents": [{"title": "Purring", "year": 1999, "text": "x"}]})
    assert body.texts == ["title: Purring\nyear: 1999"]
    assert CohereRequest.model_validate({"query": "q", "documents": ["plain"]}).texts == ["plain"]
    with pytest.raises(ValidationError) as e:
        CohereRequest.model_validate({"query": "q", "rank_fields": ["title"], "documents": ["no title"]})
    assert "documents.0 has no field 'title' (named in rank_fields)" in validation_message(e.value)


def test_native_ids_default_to_index_and_must_be_unique():
    body = NativeRequest.model_validate({"query": "q", "documents": ["a", {"id": "x", "text": "b"}]})
    assert body.ids == ["0", "x"]
    with pytest.raises(ValidationError, match="appears more than once"):
        NativeRequest.model_validate({"query": "q", "documents": ["a", {"id": "0", "text": "b"}]})


CONFIGS = Path(__file__).resolve().parent.parent / "configs"


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("serve-*.yaml")), ids=lambda p: p.name)
def test_shipped_serve_configs_load(path):
    config = load_config(path, ServeConfig)
    options = config.deployment.serve_options()
    assert options["autoscaling_config"]["max_replicas"] >= options["autoscaling_config"]["min_replicas"]


def test_serve_config_names_the_wrong_key():
    with pytest.raises(ConfigError, match=r"deployment\.resources\.gpus"):
        load_config(CONFIGS / "serve-tiny.yaml", ServeConfig, {"deployment.resources.gpus": 1})
    with pytest.raises(ConfigError, match="tensor_parallel_size"):
        load_config(CONFIGS / "serve-reasonrank-7b.yaml", ServeConfig, {"engine.tensor_parallel_size": 2})
    with pytest.raises(ConfigError, match="score 'votes'.*iterative_elimination"):
        load_config(CONFIGS / "serve-tiny.yaml", ServeConfig,
                    {"score": "votes", "strategy.name": "iterative_elimination"})

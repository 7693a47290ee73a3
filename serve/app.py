"""The Ray Serve application: an HTTP ingress deployment in front of the model deployment ("Reranker").

    POST /v1/rerank   Cohere rerank v1          POST /native/rerank   full ranking, ids, reasoning per window,
    POST /v2/rerank   Cohere rerank v2                                strategy overrides
    POST /rerank      Jina / vLLM               GET  /health          200 only while a model replica is loaded
    GET  /v1/models   the served model                                and its engine answers

The ingress (`RerankIngress`, a fraction of a CPU, no model) holds each HTTP request: auth, the body within
limits, the deadline, errors, metrics, the response. It hands the parsed request to a model replica
(`serve.model_replica`: engine + `reasonrank.Reranker`) through a Serve handle, and when that replica dies
under it, to another one within the request's deadline (`serve.failover`); with no live replica in time the
answer is a 503 with Retry-After naming the cause, never a 500. A request goes one way: ingress → handle →
replica → reranker → strategy driver → engine, and back.

Faults: a request past its deadline gets 504, and one whose client went away is cancelled; either way its
call on the replica is cancelled and its in-flight window aborted in the engine. What ranking raises becomes
a status in one place (`serve.errors.http_error`): a prompt the engine refuses for what it is (too long for
its context) is the client's input, 400, and the engine stays healthy; when the engine itself raises on a
window, only that request gets 503, and the replica is then suspect until the engine answers a one-token
probe (from /health or Serve's health check). A replica whose engine fails the probe is reported unhealthy
and Serve replaces it. /health never waits behind ranking work.

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
from ray.serve.handle import DeploymentHandle

from reasonrank.config import ConfigError, load_config
from reasonrank.reranker import DocumentRanking
from reasonrank.strategies import StrategyConfig
from serve.auth import BearerAuth
from serve.body import parse_request
from serve.config import ServeConfig
from serve.errors import ServeError, http_error
from serve.failover import ModelReplicas
from serve.metrics import RerankMetrics
from serve.model_replica import RerankerDeployment
from serve.responses import cohere_response, jina_response, native_response
from serve.schema import CohereRequest, JinaRequest, NativeRequest

logger = logging.getLogger("ray.serve")

TIMEOUT_HEADER = "x-request-timeout"  # seconds; a client may ask for a deadline shorter than the server's

api = FastAPI(title="ReasonRank reranker",
              description="Reasoning listwise reranking: Cohere v1/v2, Jina/vLLM and native APIs.")


@api.exception_handler(ServeError)
async def _serve_error(_: Request, error: ServeError) -> JSONResponse:
    return error.response()


@serve.deployment(name="Ingress")
@serve.ingress(api)
class RerankIngress:
    def __init__(self, config: dict[str, Any], model: DeploymentHandle):
        self.config = ServeConfig.model_validate(config)
        self.auth = BearerAuth.from_env(self.config.auth_token_env)  # fail fast: before any request
        self.metrics = RerankMetrics()
        ingress = self.config.ingress
        self.model = ModelReplicas(model, ingress.replica_wait_s, ingress.retry_after_s,
                                   on_retry=self.metrics.record_retry)
        logger.info("ingress for %r: auth %s", self.config.model_name, "on" if self.auth.enabled else "off")

    # ---- the HTTP side ---------------------------------------------------------------------------------

    @api.get("/health")
    async def health(self) -> JSONResponse:
        try:
            status, body = await self.model.call("health", deadline_s=self.config.deployment.health_check_timeout_s)
        except (ServeError, TimeoutError) as error:
            return JSONResponse({"status": "unavailable", "message": str(error) or "the health check timed out"},
                                status_code=503)
        return JSONResponse(body, status_code=status)

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
        """Auth, parse within limits, rank on a model replica under the deadline, respond; every outcome
        counted."""
        started, status, cause = time.perf_counter(), 500, "internal"
        request_id = uuid.uuid4().hex
        try:
            self.auth.check(request.headers.get("authorization"))
            limits = self.config.limits
            body = await parse_request(request, model, limits.max_body_bytes, limits.max_documents)
            deadline = self._deadline(request)
            try:
                strategy, ranking = await self.model.call("rank", body, deadline_s=deadline)
            except TimeoutError:
                raise ServeError(504, f"reranking did not finish within the request deadline of {deadline:g} s "
                                      f"({len(body.documents)} documents)", cause="deadline") from None
            self.metrics.record_ranking(api_name, ranking)
            payload = respond(request_id, body, strategy, ranking).model_dump(mode="json", exclude_none=True)
            status = 200
            return JSONResponse(payload)
        except Exception as error:
            answer = http_error(error)
            if answer is None:
                raise
            status, cause = answer.status, answer.cause
            return answer.response()
        except asyncio.CancelledError:  # the client went away: the replica's call is cancelled on the way out
            status, cause = 499, "client_gone"
            raise
        finally:
            elapsed = time.perf_counter() - started
            self.metrics.record_request(api_name, status, elapsed, None if status == 200 else cause)
            logger.info("%s %s -> %d in %.3f s", api_name, request_id, status, elapsed)

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
    as_json = config.model_dump(mode="json")
    model = RerankerDeployment.options(**config.deployment.serve_options()).bind(as_json)
    return RerankIngress.options(**config.ingress.serve_options()).bind(as_json, model)

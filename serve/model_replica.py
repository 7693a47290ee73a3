"""The model deployment ("Reranker"): each replica loads the model once into a `reasonrank.Reranker`, its
engine wrapped once in health tracking (`serve.engine_health`), and ranks what the HTTP ingress
(`serve.app`) sends it through a handle. `deployment.autoscaling` and `deployment.resources` size these
replicas.

A request's strategy is resolved here, against the strategy this replica's model was trained with (the
ingress does not read the model). What ranking raises leaves as `http_error` makes it (`serve.errors`), so
the ingress answers it as it is. Serve routes to a replica only after its constructor returned, checks it
with `check_health` (an engine that failed and does not answer a probe has the replica replaced), and stops
it gracefully: in-flight calls finish first (`graceful_shutdown_timeout_s`), also when its node drains.
"""
from __future__ import annotations

import logging
import time
from typing import Any

from pydantic import BaseModel
from ray import serve

from reasonrank.reranker import DocumentRanking, Reranker
from reasonrank.strategies import StrategyConfig
from serve.config import ServeConfig
from serve.engine_health import HealthTrackedEngine
from serve.errors import ServeError, http_error
from serve.schema import NativeRequest

logger = logging.getLogger("ray.serve")


@serve.deployment(name="Reranker")
class RerankerDeployment:
    def __init__(self, config: dict[str, Any]):
        self.config = ServeConfig.model_validate(config)
        started = time.perf_counter()
        probe_timeout_s = self.config.deployment.health_check_timeout_s
        self.reranker = Reranker.build(self.config.engine, self.config.strategy, self.config.sampling,
                                       score=self.config.score,
                                       max_windows_in_flight=self.config.max_windows_in_flight,
                                       wrap_engine=lambda engine: HealthTrackedEngine(engine, probe_timeout_s))
        self.engine: HealthTrackedEngine = self.reranker.engine
        logger.info("reranker %r loaded (%s backend, %s) in %.1f s", self.config.model_name,
                    self.config.engine.backend, self.config.engine.model, time.perf_counter() - started)

    async def check_health(self) -> None:
        """Serve's periodic health check: raising makes Serve replace this replica."""
        if not await self.engine.alive():
            raise RuntimeError(f"engine is down ({self.engine.failure}); replacing this replica")

    def __del__(self) -> None:
        """Serve calls this after in-flight requests finished (graceful shutdown): release the engine."""
        reranker = getattr(self, "reranker", None)
        if reranker is not None:
            reranker.close()

    async def health(self) -> tuple[int, dict[str, Any]]:
        """The status and body of /health: 200 only while the engine answers."""
        if not await self.engine.alive():
            return 503, {"status": "unavailable", "message": f"engine failed: {self.engine.failure}"}
        return 200, {"status": "ready", "model": self.config.model_name,
                     "windows_in_flight": self.engine.windows_in_flight()}

    async def rank(self, body: BaseModel) -> tuple[StrategyConfig, DocumentRanking]:
        """The strategy a request body asks for, and the ranking of its documents under it."""
        try:
            strategy = self._strategy_for(body)
            ranking = await self.reranker.rank(body.query, body.texts, strategy=strategy,
                                               score=getattr(body, "score", None), qid=getattr(body, "qid", None) or "",
                                               family=getattr(body, "family", None))
        except Exception as error:
            answer = http_error(error)
            if answer is None:
                raise
            raise answer from None
        return strategy, ranking

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

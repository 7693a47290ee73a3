"""The reranker, in process: an engine, a ranking strategy, sampling parameters and a passage truncator, held
together. The serving replica (`serve/app.py`) and the evaluate job rank through this same object.

    from reasonrank import Reranker

    reranker = Reranker.from_model("liuwenhan/reasonrank-7B")               # vLLM; backend="transformers"|"openai"
    reranker = Reranker.from_config("configs/serve-reasonrank-7b.yaml")     # any serve or evaluate config
    for result in reranker.rerank("why do cats purr", documents, top_n=3):  # index, score, document
        print(result.index, result.score, result.document)

`rerank` ranks one query, `rerank_batch` many at once through the one strategy driver (each query advances
the moment its own window returns, the engine batches every query's windows); `arerank` and `arerank_batch`
are the same for async callers. A call may name another strategy (`strategy=StrategyConfig(...)`) and
another score (`score="votes"`, see `reasonrank.scores`) than the reranker's defaults.

Documents need not be passages: objects whose fields named by `rank_fields` make each one's text, in that
order, one `field: value` line each (as Cohere's `rank_fields`), ranked with the prompt of the `family` they
belong to (`reasonrank.tasks.families`: "passages", the default; "recommendation": the query is the user's
history; "routing": the query is the question and each candidate a model, its description and price):

    items = [{"title": "Heat", "genre": "crime"}, {"title": "Up", "genre": "animation"}]
    reranker.rerank("I watched Alien, then Aliens.", items, rank_fields=["title", "genre"],
                    family="recommendation", strategy=StrategyConfig(name="iterative_elimination"))

A reranker holds what its engine opens (processes, HTTP sessions): close it (`close()`, `aclose()`) or use it
as a context manager, `with Reranker.from_model(...) as reranker:` or `async with`. Synchronous calls run on
one event loop of the reranker's own, so what the engine opens for them lives until `close`.
"""
from __future__ import annotations

import logging
import os
from collections.abc import Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import yaml

from reasonrank.config import EngineConfig, SamplingConfig, Strict, apply_overrides, parse_config
from reasonrank.documents import Document, document_texts
from reasonrank.engines import build_engine
from reasonrank.engines.base import Engine
from reasonrank.engines.engine_loop import EngineLoop
from reasonrank.prompt import PassageTruncator
from reasonrank.scores import ScoreKind, check_score, scores
from reasonrank.strategies import EngineWindows, StrategyConfig, drive, drive_requests
from reasonrank.tasks.families import FAMILIES, FamilyName
from reasonrank.types import Candidate, Query, RankedList, RerankRequest, WindowLog, WindowTotals

T = TypeVar("T")

log = logging.getLogger(__name__)



@dataclass(frozen=True)
class RerankResult:
    index: int  # position in the documents given
    score: float
    document: Document


@dataclass(frozen=True)
class DocumentRanking(WindowTotals):
    """One query's documents ranked: indices best first (always a permutation), their scores, the windows."""

    order: list[int]
    scores: list[float]  # of order[0], order[1], …
    windows: list[WindowLog]

    def results(self, documents: Sequence[Document], top_n: int | None = None) -> list[RerankResult]:
        """The best `top_n` (all with None) as results carrying `documents`' own entries."""
        top = self.order[:top_n] if top_n else self.order
        return [RerankResult(i, score, documents[i]) for i, score in zip(top, self.scores)]


class _Pieces(Strict):
    """What every config that hosts a reranker composes; a job's other keys are its own."""

    engine: EngineConfig = EngineConfig()
    strategy: StrategyConfig = StrategyConfig()
    sampling: SamplingConfig = SamplingConfig()


class Reranker:
    def __init__(self, engine: Engine, strategy: StrategyConfig = StrategyConfig(),
                 sampling: SamplingConfig = SamplingConfig(), *, score: ScoreKind = "rank",
                 max_windows_in_flight: int = 64, context_tokens: int | None = None, owns_engine: bool = False):
        """`engine` already running (or an engine pool); `context_tokens` (the engine's max_model_len) makes
        each window fit the context; `owns_engine`: `close` closes the engine too."""
        self.engine, self.strategy, self.score = engine, strategy, score
        self.params = sampling.params()
        self.windows = EngineWindows(engine, self.params, max_windows_in_flight)
        self.context_tokens = context_tokens
        self._owns_engine = owns_engine
        self._sync_loop: EngineLoop | None = None

    @classmethod
    def build(cls, engine: EngineConfig, strategy: StrategyConfig = StrategyConfig(),
              sampling: SamplingConfig = SamplingConfig(), *,
              wrap_engine: Callable[[Engine], Engine] | None = None, **options: Any) -> Reranker:
        """Start the engine `engine` describes (inside `wrap_engine`, when given: the service's health
        tracking); the strategy takes the prompt settings the model was trained with wherever it does not
        set its own. `options`: those of the constructor."""
        if engine.backend != "openai":
            strategy = strategy.for_model(engine.model, log)
        running = build_engine(engine)
        return cls(running if wrap_engine is None else wrap_engine(running), strategy, sampling,
                   context_tokens=engine.context_tokens, owns_engine=True, **options)

    @classmethod
    def from_model(cls, model: str, backend: str = "vllm", strategy: str | StrategyConfig = "sliding_window",
                   max_new_tokens: int = 3072, *, score: ScoreKind = "rank", **engine: Any) -> Reranker:
        """A reranker from arguments: the model (a folder, hub id, or an endpoint's model name), the backend
        ("vllm", "transformers", "openai"), the strategy (a name or a config), the reasoning budget in new
        tokens per window; `engine`: other `EngineConfig` keys (base_url, dtype, max_model_len, …)."""
        strategy = strategy if isinstance(strategy, StrategyConfig) else StrategyConfig(name=strategy)
        return cls.build(EngineConfig(backend=backend, model=model, **engine), strategy,
                         SamplingConfig(max_new_tokens=max_new_tokens), score=score)

    @classmethod
    def from_config(cls, path: str | os.PathLike, overrides: Mapping[str, Any] | None = None, *,
                    score: ScoreKind = "rank") -> Reranker:
        """A reranker from a serve or evaluate YAML config (its `engine`, `strategy` and `sampling`, and its
        windows in flight); `overrides` are dotted keys, as `--set` takes them."""
        with open(path, encoding="utf-8") as f:
            data = apply_overrides(yaml.safe_load(f) or {}, dict(overrides or {}), _Pieces)
        pieces = parse_config({k: data[k] for k in _Pieces.model_fields if k in data}, _Pieces, os.fspath(path))
        in_flight = data.get("max_windows_in_flight") or data.get("windows_in_flight_per_replica") or 64
        return cls.build(pieces.engine, pieces.strategy, pieces.sampling, score=score,
                         max_windows_in_flight=in_flight)

    # ---- one query --------------------------------------------------------------------------------------

    def rerank(self, query: str, documents: Sequence[Document], top_n: int | None = None, *,
               strategy: StrategyConfig | None = None, score: ScoreKind | None = None,
               rank_fields: Sequence[str] | None = None, family: FamilyName | None = None) -> list[RerankResult]:
        """`documents` ranked for `query`, best first (the best `top_n`); `rank_fields` and `family`: see the
        module."""
        return self._run(self.arerank(query, documents, top_n, strategy=strategy, score=score,
                                      rank_fields=rank_fields, family=family))

    async def arerank(self, query: str, documents: Sequence[Document], top_n: int | None = None, *,
                      strategy: StrategyConfig | None = None, score: ScoreKind | None = None,
                      rank_fields: Sequence[str] | None = None, family: FamilyName | None = None
                      ) -> list[RerankResult]:
        ranking = await self.rank(query, document_texts(documents, rank_fields), strategy=strategy, score=score,
                                  family=family)
        return ranking.results(documents, top_n)

    async def rank(self, query: str, texts: Sequence[str], *, strategy: StrategyConfig | None = None,
                   score: ScoreKind | None = None, qid: str = "", family: FamilyName | None = None
                   ) -> DocumentRanking:
        """The whole ranking of `texts` with its windows (what the service answers from)."""
        strategy = strategy or self.strategy
        score = self._score(score, strategy)
        request = RerankRequest.of(_query(qid, query, family), [Candidate(str(i), t) for i, t in enumerate(texts)])
        ranked = await drive(strategy.build(), request, self.truncator(strategy), self.windows)
        return _ranking(ranked, score)

    def _score(self, score: ScoreKind | None, strategy: StrategyConfig) -> ScoreKind:
        """The score asked for (else this reranker's), refused before any engine call if `strategy` cannot give it."""
        score = score or self.score
        check_score(score, strategy.name)
        return score

    # ---- many queries -----------------------------------------------------------------------------------

    def rerank_batch(self, queries: Sequence[str], documents: Sequence[Sequence[Document]],
                     top_n: int | None = None, *, strategy: StrategyConfig | None = None,
                     score: ScoreKind | None = None, rank_fields: Sequence[str] | None = None,
                     family: FamilyName | None = None) -> list[list[RerankResult]]:
        """`documents[i]` ranked for `queries[i]`, every query at once."""
        return self._run(self.arerank_batch(queries, documents, top_n, strategy=strategy, score=score,
                                            rank_fields=rank_fields, family=family))

    async def arerank_batch(self, queries: Sequence[str], documents: Sequence[Sequence[Document]],
                            top_n: int | None = None, *, strategy: StrategyConfig | None = None,
                            score: ScoreKind | None = None, rank_fields: Sequence[str] | None = None,
                            family: FamilyName | None = None) -> list[list[RerankResult]]:
        if len(queries) != len(documents):
            raise ValueError(f"{len(queries)} queries but {len(documents)} lists of documents")
        score = self._score(score, strategy or self.strategy)
        requests = [RerankRequest.of(_query(str(q), query, family),
                                     [Candidate(str(i), t) for i, t in enumerate(document_texts(docs, rank_fields))])
                    for q, (query, docs) in enumerate(zip(queries, documents))]
        ranked = await self.arank_requests(requests, strategy=strategy)
        return [_ranking(r, score).results(docs, top_n) for r, docs in zip(ranked, documents)]

    def rank_requests(self, requests: list[RerankRequest], *, strategy: StrategyConfig | None = None,
                      on_query_done: Callable[[RankedList], None] | None = None) -> list[RankedList]:
        """Rerank each request's candidates (the evaluate job's form); `on_query_done` hears each ranking
        as it finishes."""
        return self._run(self.arank_requests(requests, strategy=strategy, on_query_done=on_query_done))

    async def arank_requests(self, requests: list[RerankRequest], *, strategy: StrategyConfig | None = None,
                             on_query_done: Callable[[RankedList], None] | None = None) -> list[RankedList]:
        strategy = strategy or self.strategy
        return await drive_requests(strategy.build(), requests, self.truncator(strategy), self.windows,
                                    on_query_done)

    # ---- parts ------------------------------------------------------------------------------------------

    def truncator(self, strategy: StrategyConfig | None = None) -> PassageTruncator:
        """Cuts passages to `strategy`'s budget and windows to the engine's context, the answer's room kept."""
        budget = (strategy or self.strategy).passage_max_tokens
        return PassageTruncator(self.engine.tokenizer, budget, self.context_tokens, self.params.max_new_tokens)

    def _run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        """Run `coroutine` for a synchronous caller, on the reranker's own loop (started on first use)."""
        if self._sync_loop is None:
            self._sync_loop = EngineLoop("reranker")
        return self._sync_loop.run(coroutine)

    def close(self) -> None:
        """Release what the engine opened for synchronous calls, and the engine itself if this reranker
        started it."""
        if self._sync_loop is not None:
            self._sync_loop.run(self.engine.release_loop())
            self._sync_loop.close()
            self._sync_loop = None
        if self._owns_engine:
            self.engine.close()

    async def aclose(self) -> None:
        """`close`, from async code: also releases what the engine opened for this event loop."""
        await self.engine.release_loop()
        self.close()

    def __enter__(self) -> Reranker:
        return self

    def __exit__(self, *_: Any) -> None:
        self.close()

    async def __aenter__(self) -> Reranker:
        return self

    async def __aexit__(self, *_: Any) -> None:
        await self.aclose()


def _query(qid: str, text: str, family: FamilyName | None) -> Query:
    """The query, its domain the family whose prompts rank its candidates (passages when None)."""
    if family is not None and family not in FAMILIES:
        raise ValueError(f"unknown family {family!r}; known: {', '.join(FAMILIES)}")
    return Query(qid, text, family or "")


def _ranking(ranked: RankedList, score: ScoreKind) -> DocumentRanking:
    return DocumentRanking([int(d) for d in ranked.docids], scores(score, ranked.docids, ranked.windows),
                           ranked.windows)

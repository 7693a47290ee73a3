"""Turning one ranking into each API's response body.

Every API reports the same ranking, best first, each document's `relevance_score` the score the server's
config (`score`) or a native request asks for (`reasonrank/scores.py`): by default `1/(1+rank)`, strictly
decreasing with rank and in (0, 1], which says where the model placed a document; `votes`, the share of
the windows the model ranked it high in, can be thresholded. Neither is a calibrated probability.
"""
from __future__ import annotations

from reasonrank.strategies import StrategyConfig
from reasonrank.parsing import extract_answer, extract_reasoning
from reasonrank.reranker import DocumentRanking
from serve.schema import (ApiVersion, CohereMeta, CohereResponse, CompatibleRequest, JinaResponse, JinaUsage,
                          NativeRequest, NativeResponse, NativeUsage, RankedDocument, CompatibleResult, TokenUsage,
                          WindowReport)


def _results(body: CompatibleRequest, ranking: DocumentRanking, return_documents: bool) -> list[CompatibleResult]:
    return [CompatibleResult(index=r.index, relevance_score=r.score,
                         document=body.documents[r.index].model_dump(exclude_unset=True) if return_documents else None)
            for r in ranking.results(body.documents, body.top_n)]


def cohere_response(request_id: str, body: CompatibleRequest, ranking: DocumentRanking, version: str) -> CohereResponse:
    meta = CohereMeta(api_version=ApiVersion(version=version),
                      tokens=TokenUsage(input_tokens=ranking.prompt_tokens, output_tokens=ranking.completion_tokens))
    return CohereResponse(id=request_id, results=_results(body, ranking, body.return_documents), meta=meta)


def jina_response(request_id: str, model: str, body: CompatibleRequest, ranking: DocumentRanking) -> JinaResponse:
    usage = JinaUsage(prompt_tokens=ranking.prompt_tokens,
                      total_tokens=ranking.prompt_tokens + ranking.completion_tokens)
    return JinaResponse(id=request_id, model=model, usage=usage,
                        results=_results(body, ranking, body.return_documents))


def native_response(request_id: str, model: str, body: NativeRequest, strategy: StrategyConfig,
                    ranking: DocumentRanking) -> NativeResponse:
    ids, texts = body.ids, body.texts if body.return_documents else None
    ranked = [RankedDocument(rank=rank + 1, index=i, id=ids[i], relevance_score=score,
                             text=texts[i] if texts else None)
              for rank, (i, score) in enumerate(zip(ranking.order, ranking.scores))]
    reasons = body.return_reasoning
    windows = [WindowReport(start=w.start, end=w.end, well_formed=w.well_formed, finish_reason=w.finish_reason,
                            prompt_tokens=w.prompt_tokens, completion_tokens=w.completion_tokens,
                            latency_s=w.latency_s, in_flight=w.in_flight, round=w.round,
                            forced_answer=w.forced_answer,
                            reasoning=extract_reasoning(w.response) if reasons else None,
                            answer=extract_answer(w.response) if reasons else None,
                            response=w.response if reasons else None)
               for w in ranking.windows]
    usage = NativeUsage(prompt_tokens=ranking.prompt_tokens, completion_tokens=ranking.completion_tokens,
                        windows=ranking.calls, malformed_windows=ranking.malformed_windows,
                        rounds=ranking.rounds, forced_answers=ranking.forced_answers)
    return NativeResponse(id=request_id, model=model, qid=body.qid, strategy=strategy, ranking=ranked,
                          windows=windows, usage=usage)

"""ReasonRank: reasoning-intensive listwise reranking — the domain, importable without Ray.

`Reranker` is the in-process reranker (reasonrank/reranker.py). The public entry points most code needs
are re-exported here; each concept lives in one module:
prompt.py (the prompt), parsing.py (the parser), reward.py (the multi-view reward), strategies/ (sliding
window, one-shot, …), engines/ (vLLM, transformers, OpenAI-compatible), metrics.py, data/.
"""
from reasonrank.parsing import ParsedRanking, parse_ranking
from reasonrank.reranker import Reranker, RerankResult
from reasonrank.reward import RewardWeights, multi_view_reward
from reasonrank.types import Candidate, Query, RankedList, RerankRequest

__all__ = ["Reranker", "RerankResult", "ParsedRanking", "parse_ranking", "RewardWeights", "multi_view_reward",
           "Candidate", "Query", "RankedList", "RerankRequest"]

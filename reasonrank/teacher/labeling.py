"""One item through the teacher: a label row (the full response, reasoning and parsed label) or an error row.

An answer that cannot be read — a pointwise verdict that is neither Yes nor No, a listwise answer that is
not a permutation of the list — counts as a malformed response and is retried like a malformed body.
When every attempt fails, the item becomes an error row carrying the reason; nothing is dropped silently.
"""
from __future__ import annotations

import time
from typing import Any

import pyarrow as pa

from reasonrank.engines.base import Generation, SamplingParams
from reasonrank.engines.openai_engine import MalformedResponse, OpenAIEngine, TeacherCallFailed
from reasonrank.parsing import ParsedRanking, parse_ranking
from reasonrank.teacher.items import LISTWISE, POINTWISE, LabelItem
from reasonrank.teacher.prompts import parse_relevance

_ITEM_FIELDS = [
    ("key", pa.string()), ("kind", pa.string()), ("qid", pa.string()), ("domain", pa.string()),
    ("docids", pa.list_(pa.string())), ("model", pa.string()),
]
LABEL_SCHEMA = pa.schema(_ITEM_FIELDS + [
    ("response", pa.string()),  # the teacher's full response, `<think>reasoning</think>answer`
    ("reasoning", pa.string()),
    ("relevant", pa.bool_()),  # pointwise verdict (null for listwise)
    ("order", pa.list_(pa.int32())),  # listwise ranking: 0-based indices into docids, best first
    ("prompt_tokens", pa.int64()), ("completion_tokens", pa.int64()),
    ("latency_s", pa.float64()), ("finish_reason", pa.string()),
    ("attempts", pa.int32()), ("retried_for", pa.list_(pa.string())),  # reasons of the failed attempts
    ("labelled_at", pa.float64()),
])
ERROR_SCHEMA = pa.schema(_ITEM_FIELDS + [
    ("reason", pa.string()),  # rate_limited, server_error, timeout, connection, malformed, http_4xx, …
    ("message", pa.string()), ("attempts", pa.int32()), ("failed_at", pa.float64()),
])


def as_structured(gen: Generation) -> str:
    """The response as `<think>…</think><answer>…</answer>`, wrapping a bare answer content in tags
    (some reasoning APIs return the ranking alone in `content`)."""
    if "<answer>" in gen.text or gen.reasoning is None:
        return gen.text
    return f"<think>{gen.reasoning}</think><answer>{gen.answer or ''}</answer>"


def read_listwise(gen: Generation, size: int) -> ParsedRanking:
    parsed = parse_ranking(as_structured(gen), size)
    if not parsed.well_formed:
        raise MalformedResponse(f"the answer is not a ranking of all {size} passages")
    return parsed


def read_pointwise(gen: Generation) -> bool:
    verdict = parse_relevance(gen.text)
    if verdict is None:
        raise MalformedResponse("the answer is neither Yes nor No")
    return verdict


async def label_item(engine: OpenAIEngine, item: LabelItem, params: SamplingParams) -> tuple[str, dict[str, Any]]:
    """("label", row) or ("error", row) for one item; never raises for a failed call."""
    base = {"key": item.key, "kind": item.kind, "qid": item.qid, "domain": item.domain,
            "docids": list(item.docids), "model": engine.config.model}
    if item.kind == LISTWISE:
        def validate(gen: Generation) -> None:
            read_listwise(gen, len(item.docids))
    elif item.kind == POINTWISE:
        def validate(gen: Generation) -> None:
            read_pointwise(gen)
    else:
        raise ValueError(f"item {item.key}: unknown kind {item.kind!r}")
    try:
        gen = await engine.complete(list(item.messages), params, validate=validate)
    except TeacherCallFailed as failed:
        return "error", {**base, "reason": failed.reason, "message": failed.message,
                         "attempts": failed.attempts, "failed_at": time.time()}
    relevant = read_pointwise(gen) if item.kind == POINTWISE else None
    order = read_listwise(gen, len(item.docids)).order if item.kind == LISTWISE else None
    return "label", {**base, "response": as_structured(gen), "reasoning": gen.reasoning or "",
                     "relevant": relevant, "order": order,
                     "prompt_tokens": gen.prompt_tokens, "completion_tokens": gen.completion_tokens,
                     "latency_s": gen.latency_s, "finish_reason": gen.finish_reason,
                     "attempts": len(gen.retries) + 1, "retried_for": gen.retries,
                     "labelled_at": time.time()}

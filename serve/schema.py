"""HTTP request and response bodies: Cohere rerank v1 and v2, Jina/vLLM `/rerank`, and the native API.

Requests are validated with a context carrying the server's limits (`max_documents`), so every rejection
names the field and, where one applies, the limit. Documents are strings or objects with a `text` field
(other keys are kept and echoed back with the document); with `rank_fields` (Cohere v1 and native), objects
whose named fields make the text ranked (`reasonrank.documents`, as the Python API does).
"""
from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, ValidationInfo, field_validator,
                      model_validator)

from reasonrank.config import ReasoningConfig
from reasonrank.documents import document_texts
from reasonrank.scores import ScoreKind
from reasonrank.strategies import StrategyConfig, overridden
from reasonrank.tasks.families import FamilyName


class RequestDocument(BaseModel):
    """A document as a request sends it: its `text`, and any other keys (echoed back with it)."""

    model_config = ConfigDict(extra="allow")

    text: str


def _document_from_string(value: Any) -> Any:
    if isinstance(value, str):
        return {"text": value}
    if not isinstance(value, dict):
        raise ValueError(f"a document is a string or an object with a `text` field, got {type(value).__name__}")
    return value


RequestDocumentIn = Annotated[RequestDocument, BeforeValidator(_document_from_string)]


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid")

    query: str
    documents: list[RequestDocumentIn]
    max_tokens_per_doc: int | None = Field(None, ge=1)

    @field_validator("query")
    @classmethod
    def _query_not_blank(cls, query: str) -> str:
        if not query.strip():
            raise ValueError("the query is empty")
        return query

    @field_validator("documents")
    @classmethod
    def _documents_within_limit(cls, documents: list[RequestDocument], info: ValidationInfo) -> list[RequestDocument]:
        if not documents:
            raise ValueError("no documents to rerank; send at least one")
        limit = (info.context or {}).get("max_documents")
        if limit is not None and len(documents) > limit:
            raise ValueError(f"{len(documents)} documents is more than the limit of {limit} per request "
                             "(limits.max_documents)")
        return documents

    @property
    def texts(self) -> list[str]:
        return [d.text for d in self.documents]


class CompatibleRequest(_Request):
    """What the Cohere and Jina/vLLM APIs share."""

    model: str | None = None  # accepted for client compatibility; the server answers with its one model
    top_n: int | None = Field(None, ge=1)


class FieldedDocument(RequestDocument):
    text: str | None = None  # with `rank_fields`, an object may rank other fields instead


class _RanksFields(_Request):
    """A request whose `rank_fields` name the fields that, in that order, make each document's text ranked,
    one `field: value` line each."""

    documents: list[Annotated[FieldedDocument, BeforeValidator(_document_from_string)]]
    rank_fields: list[str] | None = Field(None, min_length=1)

    @model_validator(mode="after")
    def _each_document_has_what_is_ranked(self) -> "_RanksFields":
        _ = self.texts  # raises a ValueError naming the first document that lacks a field
        return self

    @property
    def texts(self) -> list[str]:
        return document_texts([doc.model_dump(exclude_none=True) for doc in self.documents], self.rank_fields)


class CohereRequest(_RanksFields, CompatibleRequest):
    """Cohere rerank v1 and v2: one body with every documented field of both (v2 dropped `return_documents`,
    kept here so v2 clients can still ask for the text). `rank_fields` (v1) is implemented; `max_chunks_per_doc`
    (passages are cut to a token budget, never chunked) and `priority` (requests are served as they come) are
    accepted and ignored."""

    return_documents: bool = False
    max_chunks_per_doc: int | None = Field(None, ge=1)  # v1, ignored
    priority: int | None = None  # v2, ignored


class JinaRequest(CompatibleRequest):
    top_n: int | None = Field(None, ge=0)  # vLLM's clients send 0 for "all"
    return_documents: bool = True  # Jina's and vLLM's default


class NativeDocument(FieldedDocument):
    id: str | None = None  # defaults to the document's index


class StrategyOverride(BaseModel):
    """Per-request overrides of the configured strategy: the strategy, its parameters and how much each window
    may reason (`reasoning` replaces the server's whole); unset fields keep the server's values."""

    model_config = ConfigDict(extra="forbid")

    name: Literal["sliding_window", "one_shot", "tdpart", "parallel_blocks", "iterative_elimination"] | None = None
    window_size: int | None = Field(None, ge=1)
    step: int | None = Field(None, ge=1)
    depth: int | None = Field(None, ge=1)
    cutoff: int | None = Field(None, ge=1)  # tdpart
    rerank_top: bool | None = None  # parallel_blocks
    stop_at: int | None = Field(None, ge=1)  # iterative_elimination
    reasoning: ReasoningConfig | None = None

    def apply(self, base: StrategyConfig) -> StrategyConfig:
        """The server's strategy with these overrides, validated whole; ValueError naming each field at fault
        (a sliding window that would skip passages, a tdpart cutoff outside its window, …)."""
        merged = overridden(base, self.model_dump(exclude_none=True))
        if merged["name"] == "sliding_window" and merged["step"] > merged["window_size"]:
            raise ValueError(f"strategy.step ({merged['step']}) is larger than strategy.window_size "
                             f"({merged['window_size']}): passages between windows would never be ranked")
        try:
            return StrategyConfig.model_validate(merged)
        except ValidationError as e:
            raise ValueError("; ".join(".".join(("strategy", *map(str, err["loc"]))) + ": " + err["msg"]
                                       for err in e.errors())) from None


class NativeRequest(_RanksFields):
    """The native API: ids, strategy overrides, reasoning per window; `rank_fields` as Cohere's, and the
    `family` whose prompts rank the documents (passages when left out; recommendation: the query is the
    user's history and the documents candidate items; routing: the query is the question and the documents
    candidate models, with their descriptions and prices)."""

    documents: list[Annotated[NativeDocument, BeforeValidator(_document_from_string)]]
    family: FamilyName | None = None
    qid: str | None = None
    strategy: StrategyOverride | None = None
    score: ScoreKind | None = None  # "rank" or "votes" (reasonrank/scores.py); None: the server's `score`
    return_reasoning: bool = False
    return_documents: bool = False

    @field_validator("documents")
    @classmethod
    def _unique_ids(cls, documents: list[NativeDocument]) -> list[NativeDocument]:
        seen: set[str] = set()
        for i, doc in enumerate(documents):
            doc_id = doc.id if doc.id is not None else str(i)
            if doc_id in seen:
                raise ValueError(f"document id {doc_id!r} appears more than once; ids must be unique")
            seen.add(doc_id)
        return documents

    @property
    def ids(self) -> list[str]:
        return [d.id if d.id is not None else str(i) for i, d in enumerate(self.documents)]


# ---- responses -------------------------------------------------------------------------------------------


class CompatibleResult(BaseModel):
    """One ranked document in a Cohere or Jina response."""

    index: int
    relevance_score: float
    document: dict[str, Any] | None = None


class ApiVersion(BaseModel):
    version: str


class BilledUnits(BaseModel):
    search_units: int = 1


class TokenUsage(BaseModel):
    input_tokens: int
    output_tokens: int


class CohereMeta(BaseModel):
    api_version: ApiVersion
    billed_units: BilledUnits = BilledUnits()
    tokens: TokenUsage


class CohereResponse(BaseModel):
    id: str
    results: list[CompatibleResult]
    meta: CohereMeta


class JinaUsage(BaseModel):
    prompt_tokens: int
    total_tokens: int


class JinaResponse(BaseModel):
    id: str
    model: str
    usage: JinaUsage
    results: list[CompatibleResult]


class RankedDocument(BaseModel):
    rank: int  # 1 = best
    index: int  # position in the request's documents
    id: str
    relevance_score: float
    text: str | None = None  # the text ranked (with rank_fields: the named fields' lines), if asked for


class WindowReport(BaseModel):
    start: int  # the window's span in the list as it stood when the window ran
    end: int
    well_formed: bool
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int
    latency_s: float
    in_flight: int  # windows the engine was generating (all requests') when this one was submitted, itself included
    round: int = 0  # the request's sequential round this window ran in (0: first)
    forced_answer: bool = False  # its reasoning hit the budget and the answer was forced (two engine calls)
    reasoning: str | None = None  # these three only when the request asks for return_reasoning
    answer: str | None = None
    response: str | None = None  # the model's whole output for the window, as generated


class NativeUsage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    windows: int  # LLM calls (a window whose answer was forced counts once)
    malformed_windows: int
    rounds: int = 0  # sequential rounds of windows: what the latency grows with
    forced_answers: int = 0  # windows whose reasoning hit the budget


class NativeResponse(BaseModel):
    id: str
    model: str
    qid: str | None
    strategy: StrategyConfig
    ranking: list[RankedDocument]
    windows: list[WindowReport]
    usage: NativeUsage

"""Errors the service answers with: a status, a message that names the problem, optional headers.

Every error body is `{"message": ...}` (Cohere's shape), so clients of every API read it the same way.
What ranking raises (the engine, the prompt, the score) becomes a status in one place, `http_error`.
"""
from __future__ import annotations

from fastapi.responses import JSONResponse
from pydantic import ValidationError

from reasonrank.engines.base import EngineInputError
from reasonrank.prompt import PromptTooLong
from reasonrank.scores import ScoreUnavailable
from serve.engine_health import EngineFailure


class ServeError(Exception):
    """An answer other than 200. `cause` names why, for the metrics of failed requests (`input` for the
    client's, or what failed on the server: `engine_failed`, `no_live_replica`, `deadline`)."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None, cause: str = "input"):
        super().__init__(message)
        self.status, self.message, self.headers, self.cause = status, message, headers or {}, cause

    def __reduce__(self):  # raised in a model replica, it crosses to the ingress whole
        return type(self), (self.status, self.message, self.headers, self.cause)

    def response(self) -> JSONResponse:
        return JSONResponse({"message": self.message}, status_code=self.status, headers=self.headers)


def validation_message(error: ValidationError) -> str:
    """`documents.3.text: Field required; query: the query is empty` — one part per problem."""
    parts = []
    for problem in error.errors(include_url=False):
        where = ".".join(str(p) for p in problem["loc"]) or "body"
        message = problem["msg"].removeprefix("Value error, ")
        parts.append(f"{where}: {message}")
    return "; ".join(parts)


def http_error(error: Exception) -> ServeError | None:
    """The answer to what ranking raised, in one place: the client's input at fault (400, 413, 422), or the
    engine (503, retry shortly); None for what is none of these (a bug: 500)."""
    if isinstance(error, ServeError):
        return error
    if isinstance(error, EngineInputError):
        return ServeError(400, f"the model cannot take this request: {error}")
    if isinstance(error, PromptTooLong):  # the request's fault: never the engine's, the replica stays healthy
        return ServeError(413, f"the request does not fit the model: {error}")
    if isinstance(error, ScoreUnavailable):
        return ServeError(422, str(error))
    if isinstance(error, EngineFailure):
        return ServeError(503, f"the reranking engine failed ({error}); retry shortly", headers={"Retry-After": "5"},
                          cause="engine_failed")
    return None

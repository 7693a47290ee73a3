"""Errors the service answers with: a status, a message that names the problem, optional headers.

Every error body is `{"message": ...}` (Cohere's shape), so clients of every API read it the same way.
"""
from __future__ import annotations

from fastapi.responses import JSONResponse
from pydantic import ValidationError


class ServeError(Exception):
    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers or {}

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

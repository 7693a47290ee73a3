"""Reading a request body within the server's limits, into a validated request model.

Each way a body can be wrong gets a 4xx naming the problem: too large (413, with the limit), not JSON
(400), not an object or failing validation (422, naming each field and, where one applies, the limit).
"""
from __future__ import annotations

import json
from typing import TypeVar

from fastapi import Request
from pydantic import BaseModel, ValidationError

from serve.errors import ServeError, validation_message

M = TypeVar("M", bound=BaseModel)


async def read_body(request: Request, max_bytes: int) -> bytes:
    """The raw body, refusing (413) as soon as it is known to exceed `max_bytes`."""
    too_large = f"request body exceeds the limit of {max_bytes} bytes (limits.max_body_bytes)"
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
        raise ServeError(413, f"{too_large}: content-length is {declared}")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_bytes:
            raise ServeError(413, too_large)
        chunks.append(chunk)
    return b"".join(chunks)


async def parse_request(request: Request, model: type[M], max_bytes: int, max_documents: int) -> M:
    raw = await read_body(request, max_bytes)
    try:
        data = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ServeError(400, f"request body is not valid JSON: {e}") from None
    if not isinstance(data, dict):
        raise ServeError(422, f"request body must be a JSON object, got {type(data).__name__}")
    try:
        return model.model_validate(data, context={"max_documents": max_documents})
    except ValidationError as e:
        raise ServeError(422, validation_message(e)) from None

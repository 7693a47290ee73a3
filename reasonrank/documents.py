"""What is ranked for a document: the text of a string, or of an object (its `text`, or the fields named by
`rank_fields`, as Cohere's). The service's request schema and the Python `Reranker` both read documents here."""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

Document = str | Mapping[str, Any]  # a text, or an object whose `text` (or `rank_fields`) is ranked, kept whole


def document_text(document: Document, rank_fields: Sequence[str] | None = None) -> str:
    """The text ranked for a document: itself, or an object's `text`; with `rank_fields`, those fields of the
    object in that order, one `field: value` line each (a string is an object whose one field is `text`).
    ValueError naming the fields a document lacks."""
    if isinstance(document, str):
        if not rank_fields:
            return document
        document = {"text": document}
    if not isinstance(document, Mapping):
        raise TypeError(f"a document is a string or a mapping, got {document!r:.80}")
    if missing := [f for f in rank_fields or ["text"] if document.get(f) is None]:
        named = "named in rank_fields" if rank_fields else "or rank_fields naming other fields"
        raise ValueError(f"has no field {', '.join(map(repr, missing))} ({named})")
    if not rank_fields:
        if not isinstance(document["text"], str):
            raise TypeError(f"a document's `text` is a string, got {document['text']!r:.80}")
        return document["text"]
    return "\n".join(f"{field}: {document[field]}" for field in rank_fields)


def document_texts(documents: Sequence[Document], rank_fields: Sequence[str] | None = None) -> list[str]:
    """Each document's text (`document_text`); ValueError naming the first document that lacks a field."""
    texts = []
    for i, document in enumerate(documents):
        try:
            texts.append(document_text(document, rank_fields))
        except ValueError as e:
            raise ValueError(f"documents.{i} {e}") from None
    return texts

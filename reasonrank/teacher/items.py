"""The labelling work, as items with stable keys.

Per query, the top `list_size` candidates give one pointwise item per passage (is it relevant?) and one
listwise item (reason, then rank them all), plus optionally `shuffled_lists` more listwise items of the
same candidates in shuffled orders: permutation augmentation (RankVicuna, Pradeep et al. 2023), so that the
student sees relevant passages anywhere in a list, not only where the first stage tends to put them.
An item's key is a hash of what identifies the work — task kind, teacher model, query id and candidate
ids in order — and nothing that varies between runs, so a rerun of the job recognises what is already
labelled and labels each item exactly once.
"""
from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from reasonrank.prompt import PassageTruncator, listwise_messages
from reasonrank.teacher.prompts import pointwise_messages
from reasonrank.types import Candidate, RerankRequest

POINTWISE = "pointwise"
LISTWISE = "listwise"
KINDS = (POINTWISE, LISTWISE)


def item_key(kind: str, model: str, qid: str, docids: Iterable[str]) -> str:
    if kind not in KINDS:
        raise ValueError(f"unknown item kind {kind!r}; expected one of {KINDS}")
    identity = json.dumps([kind, model, qid, list(docids)], ensure_ascii=False)
    return hashlib.sha256(identity.encode("utf-8")).hexdigest()[:32]


@dataclass(frozen=True)
class LabelItem:
    key: str
    kind: str  # POINTWISE or LISTWISE
    qid: str
    domain: str
    docids: tuple[str, ...]  # the passage (pointwise) or the list in prompt order (listwise)
    messages: tuple[dict[str, str], ...]  # the prompt sent to the teacher

    def to_row(self) -> dict[str, Any]:
        """A flat row for Ray Data (messages as JSON text: one column type for every prompt)."""
        return {"key": self.key, "kind": self.kind, "qid": self.qid, "domain": self.domain,
                "docids": list(self.docids), "messages": json.dumps(list(self.messages), ensure_ascii=False)}

    @staticmethod
    def from_row(row: dict[str, Any]) -> "LabelItem":
        return LabelItem(str(row["key"]), str(row["kind"]), str(row["qid"]), str(row["domain"]),
                         tuple(str(d) for d in row["docids"]), tuple(json.loads(row["messages"])))


def teacher_items(request: RerankRequest, model: str, list_size: int = 20,
                  truncate: PassageTruncator | None = None, use_answer: bool = True,
                  shuffled_lists: int = 0) -> list[LabelItem]:
    """The pointwise items of the top `list_size` candidates of `request`, then its listwise items: the
    first-stage order, then `shuffled_lists` distinct shuffled orders (the same for the same query)."""
    query = request.query
    window = request.candidates[:list_size]
    if not window:
        return []
    truncate = truncate or PassageTruncator(None, None)
    answer = query.answer if use_answer else None
    items = [
        LabelItem(item_key(POINTWISE, model, query.qid, [c.docid]), POINTWISE, query.qid, query.domain,
                  (c.docid,), tuple(pointwise_messages(query.text, truncate(c.text), answer)))
        for c in window
    ]
    for order in _list_orders(window, shuffled_lists, random.Random(f"lists:{query.qid}")):
        docids = tuple(c.docid for c in order)
        items.append(LabelItem(item_key(LISTWISE, model, query.qid, docids), LISTWISE, query.qid, query.domain,
                               docids, tuple(listwise_messages(query.text, [c.text for c in order], truncate))))
    return items


def _list_orders(window: list[Candidate], shuffled: int, rng: random.Random) -> list[list[Candidate]]:
    orders = {tuple(c.docid for c in window): list(window)}  # insertion order: the first-stage order first
    for _ in range(100 * shuffled):  # distinct orders (a list of 2 has only one other)
        if len(orders) > shuffled:
            break
        order = rng.sample(window, len(window))
        orders.setdefault(tuple(c.docid for c in order), order)
    return list(orders.values())

"""From the teacher's labels to the training sets: per query, join the pointwise verdicts and each listwise
ranking, apply the self-consistency filter to each list, and build the SFT and RL rows of the kept lists.

Every list ends in exactly one state: kept, dropped (by the filter), failed (an item of its query is in the
errors dataset) or pending (an item of its query was never attempted, e.g. the job was stopped).
"""
from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from reasonrank.data.training_sets import RLSample, SFTSample
from reasonrank.prompt import PassageTruncator
from reasonrank.teacher.consistency import ConsistencyFilter
from reasonrank.teacher.items import LISTWISE, POINTWISE, LabelItem
from reasonrank.types import RerankRequest

STATES = ("kept", "dropped", "failed", "pending")


@dataclass
class Assembly:
    pointwise: list[dict[str, Any]] = field(default_factory=list)  # one row per (query, passage)
    listwise: list[dict[str, Any]] = field(default_factory=list)  # one row per labelled list
    decisions: list[dict[str, Any]] = field(default_factory=list)  # filter score and state per list
    sft: list[dict[str, Any]] = field(default_factory=list)
    rl: list[dict[str, Any]] = field(default_factory=list)
    errors: list[dict[str, Any]] = field(default_factory=list)  # the latest failure of each unlabelled item
    per_domain: dict[str, Counter] = field(default_factory=lambda: defaultdict(Counter))


def outstanding_errors(error_rows: Iterable[dict[str, Any]], labelled: Mapping[str, Any]) -> dict[str, dict]:
    """The latest error of each item that is still not labelled (later reruns may have labelled others)."""
    latest: dict[str, dict[str, Any]] = {}
    for row in error_rows:
        if row["key"] in labelled:
            continue
        if row["key"] not in latest or row["failed_at"] > latest[row["key"]]["failed_at"]:
            latest[row["key"]] = row
    return latest


def assemble(requests: list[RerankRequest], items: list[LabelItem], labels: Mapping[str, dict[str, Any]],
             errors: Mapping[str, dict[str, Any]], consistency: ConsistencyFilter,
             truncate: PassageTruncator | None = None) -> Assembly:
    """`labels` and `errors`: rows by item key (see `store.PartStore.read`, `outstanding_errors`)."""
    by_qid: dict[str, list[LabelItem]] = defaultdict(list)
    for item in items:
        by_qid[item.qid].append(item)
    out = Assembly()
    for request in requests:
        query = request.query
        mine = by_qid.get(query.qid)
        if not mine:
            continue
        out.errors.extend(errors[i.key] for i in mine if i.key in errors)
        done = [labels[i.key] for i in mine if i.key in labels]
        out.pointwise.extend(_pointwise_row(row) for row in done if row["kind"] == POINTWISE)
        out.listwise.extend(_listwise_row(row) for row in done if row["kind"] == LISTWISE)
        lists = [i for i in mine if i.kind == LISTWISE]
        if len(done) < len(mine):
            state = "failed" if any(i.key in errors for i in mine) else "pending"
            for item in lists:
                out.decisions.append({"qid": query.qid, "key": item.key, "domain": query.domain, "state": state,
                                      "ndcg10": None})
                out.per_domain[query.domain][state] += 1
            continue
        verdicts = {labels[i.key]["docids"][0]: labels[i.key]["relevant"] for i in mine if i.kind == POINTWISE}
        passages = {c.docid: c.text for c in request.candidates}
        for item in lists:
            listwise = labels[item.key]
            docids = list(listwise["docids"])
            ranking = [docids[k] for k in listwise["order"]]
            score = consistency.score(ranking, verdicts)
            state = "kept" if consistency.keeps(score) else "dropped"
            out.decisions.append({"qid": query.qid, "key": item.key, "domain": query.domain, "state": state,
                                  "ndcg10": score})
            out.per_domain[query.domain][state] += 1
            if state == "kept":
                texts = [passages[d] for d in docids]
                out.sft.append(SFTSample.from_listwise(listwise["key"], query.qid, query.domain, query.text,
                                                       texts, listwise["reasoning"], listwise["order"],
                                                       truncate).to_record())
                out.rl.append(RLSample(listwise["key"], query.qid, query.domain, query.text, docids, texts,
                                       ranking, [d for d in docids if verdicts[d]]).to_record())
    return out


def _pointwise_row(row: dict[str, Any]) -> dict[str, Any]:
    return {"key": row["key"], "qid": row["qid"], "domain": row["domain"], "docid": row["docids"][0],
            "relevant": row["relevant"], "reasoning": row["reasoning"], "model": row["model"]}


def _listwise_row(row: dict[str, Any]) -> dict[str, Any]:
    docids = list(row["docids"])
    return {"key": row["key"], "qid": row["qid"], "domain": row["domain"], "docids": docids,
            "ranking": [docids[k] for k in row["order"]], "reasoning": row["reasoning"],
            "response": row["response"], "model": row["model"]}

"""The self-consistency filter on crafted cases, the assembly of labels into training sets, and the SFT
and RL rows round-tripping through Parquet and the reranker's prompt builder. No Ray, no server."""
from __future__ import annotations

import math

import pytest

from reasonrank.data.tables import read_records, write_records
from reasonrank.data.training_sets import RLSample, SFTSample
from reasonrank.parsing import parse_ranking
from reasonrank.prompt import listwise_messages
from reasonrank.teacher.assemble import assemble, outstanding_errors
from reasonrank.teacher.consistency import ConsistencyFilter
from reasonrank.teacher.items import LISTWISE, POINTWISE, item_key, teacher_items
from reasonrank.types import Candidate, Query, RerankRequest

DOCS = [f"d{i}" for i in range(12)]


def _one_relevant_at(rank: int) -> tuple[list[str], dict[str, bool]]:
    """A ranking of DOCS whose only relevant passage (by the pointwise labels) sits at `rank` (1-based)."""
    return DOCS, {d: i == rank - 1 for i, d in enumerate(DOCS)}


@pytest.mark.parametrize("rank, alpha, kept", [
    (1, 0.4, True),  # 1.0
    (4, 0.4, True),  # 1/log2(5) = 0.431
    (6, 0.4, False),  # 1/log2(7) = 0.356
    (3, 0.5, True),  # 1/log2(4) = 0.5 exactly: kept (>= alpha)
    (4, 0.5, False),
    (11, 0.0, True),  # below the top 10 scores 0; alpha 0 keeps everything
    (11, 0.4, False),
])
def test_filter_keeps_lists_whose_ranking_agrees_with_the_pointwise_labels(rank, alpha, kept):
    consistency = ConsistencyFilter(alpha)
    ranking, labels = _one_relevant_at(rank)
    score = consistency.score(ranking, labels)
    assert score == pytest.approx(1 / math.log2(rank + 1) if rank <= 10 else 0.0)
    assert consistency.keeps(score) is kept


def test_filter_drops_lists_without_any_relevant_label_and_rejects_unlabelled_passages():
    consistency = ConsistencyFilter()
    assert consistency.score(DOCS, dict.fromkeys(DOCS, False)) == 0.0
    with pytest.raises(ValueError, match="d11"):
        consistency.score(DOCS, {d: True for d in DOCS[:11]})
    with pytest.raises(ValueError):
        ConsistencyFilter(alpha=1.5)


def _request(qid: str, domain: str, n: int = 4) -> RerankRequest:
    return RerankRequest.of(Query(qid, f"question {qid} [1]?", domain, answer="42"),
                            [Candidate(f"{qid}-p{i}", f"passage {i} of {qid} [2]") for i in range(n)])


def _labels(items, relevant: set[str], order: list[int]) -> dict[str, dict]:
    rows = {}
    for item in items:
        row = {"key": item.key, "kind": item.kind, "qid": item.qid, "domain": item.domain,
               "docids": list(item.docids), "model": "m", "reasoning": f"why {item.qid}", "response": "…",
               "prompt_tokens": 10, "completion_tokens": 5}
        if item.kind == POINTWISE:
            row.update(relevant=item.docids[0] in relevant, order=None)
        else:
            row.update(relevant=None, order=order)
        rows[item.key] = row
    return rows


def test_assemble_puts_every_query_in_exactly_one_state():
    requests = [_request("a", "math"), _request("b", "math"), _request("c", "code"), _request("d", "code")]
    items = [it for r in requests for it in teacher_items(r, "m", list_size=4)]
    by_q = {r.query.qid: [it for it in items if it.qid == r.query.qid] for r in requests}
    labels = {}
    labels |= _labels(by_q["a"], {"a-p2"}, order=[2, 0, 1, 3])  # consistent: relevant passage first
    labels |= _labels(by_q["b"], {"b-p0"}, order=[1, 2, 3, 0])  # inconsistent: relevant last, NDCG 0.43
    labels |= _labels(by_q["c"][1:], {"c-p1"}, order=[1, 0, 2, 3])  # c-p0's verdict failed …
    failure = {"key": by_q["c"][0].key, "reason": "timeout", "failed_at": 2.0}
    stale = {"key": by_q["c"][0].key, "reason": "server_error", "failed_at": 1.0}
    fixed = {"key": by_q["a"][0].key, "reason": "malformed", "failed_at": 0.5}  # … a-p0's was retried fine
    errors = outstanding_errors([stale, failure, fixed], labels)
    labels |= _labels(by_q["d"][:2], set(), order=[])  # d was stopped half way: the rest never attempted
    out = assemble(requests, items, labels, errors, ConsistencyFilter(0.5))

    assert {d["qid"]: d["state"] for d in out.decisions} == {"a": "kept", "b": "dropped", "c": "failed",
                                                              "d": "pending"}
    assert [e["reason"] for e in out.errors] == ["timeout"]  # the latest failure, of the unlabelled item only
    assert {k: dict(v) for k, v in out.per_domain.items()} == {"math": {"kept": 1, "dropped": 1},
                                                               "code": {"failed": 1, "pending": 1}}
    assert [s["qid"] for s in out.sft] == [r["qid"] for r in out.rl] == ["a"]
    assert len(out.pointwise) == 4 + 4 + 3 + 2 and [r["qid"] for r in out.listwise] == ["a", "b", "c"]
    assert out.rl[0]["teacher_ranking"] == ["a-p2", "a-p0", "a-p1", "a-p3"]
    assert out.rl[0]["relevant_docids"] == ["a-p2"]


def test_sft_and_rl_rows_round_trip_through_parquet_and_the_prompt_builder(tmp_path):
    request = _request("a", "qa", n=5)
    items = teacher_items(request, "m", list_size=5)
    order = [3, 1, 4, 0, 2]
    out = assemble([request], items, _labels(items, {"a-p3", "a-p1"}, order), {}, ConsistencyFilter())
    write_records(tmp_path / "sft.parquet", out.sft)
    write_records(tmp_path / "rl.parquet", out.rl)
    [sft] = [SFTSample.from_record(r) for r in read_records(tmp_path / "sft.parquet")]
    [rl] = [RLSample.from_record(r) for r in read_records(tmp_path / "rl.parquet")]

    passages = [c.text for c in request.candidates]
    prompt = listwise_messages(request.query.text, passages)
    listwise_item = next(it for it in items if it.kind == LISTWISE)
    assert sft.messages[:2] == prompt == list(listwise_item.messages) == rl.messages()  # the reranker's prompt
    assistant = sft.messages[2]
    assert assistant["role"] == "assistant" and assistant["content"].startswith("<think>why a</think><answer>")
    parsed = parse_ranking(assistant["content"], len(passages))
    assert parsed.well_formed and parsed.order == order
    assert rl.teacher_ranking == [request.candidates[i].docid for i in order]
    assert sorted(rl.relevant_docids) == ["a-p1", "a-p3"] and rl.passages == passages and rl.domain == "qa"


def test_item_keys_are_stable_and_name_what_identifies_the_work():
    request = _request("a", "qa")
    first, again = teacher_items(request, "m"), teacher_items(request, "m")
    assert [i.key for i in first] == [i.key for i in again]
    assert len({i.key for i in first}) == len(first) == 5  # 4 pointwise + 1 listwise
    assert item_key(LISTWISE, "m", "a", ["x", "y"]) != item_key(LISTWISE, "m", "a", ["y", "x"])
    assert item_key(LISTWISE, "m", "a", ["x"]) != item_key(POINTWISE, "m", "a", ["x"])
    assert item_key(POINTWISE, "m", "a", ["x"]) != item_key(POINTWISE, "other-teacher", "a", ["x"])
    pointwise = first[0]
    assert "Reference Answer: 42" in pointwise.messages[1]["content"]
    assert "(1)" in pointwise.messages[1]["content"] and "[1]" not in pointwise.messages[1]["content"]
    assert "Reference Answer" not in teacher_items(request, "m", use_answer=False)[0].messages[1]["content"]
    assert type(pointwise).from_row(pointwise.to_row()) == pointwise


def test_shuffled_lists_are_distinct_stable_orders_of_the_same_candidates_each_filtered_alone():
    request = _request("a", "qa", n=5)
    items = teacher_items(request, "m", list_size=5, shuffled_lists=3)
    lists = [it for it in items if it.kind == LISTWISE]
    assert len(items) == 5 + 4 and len(lists) == 4
    assert lists[0].docids == tuple(c.docid for c in request.candidates)  # the first-stage order first
    assert len({it.docids for it in lists}) == 4 and all(sorted(it.docids) == sorted(lists[0].docids) for it in lists)
    assert [it.key for it in teacher_items(request, "m", list_size=5, shuffled_lists=3)] == [it.key for it in items]
    assert len([it for it in teacher_items(_request("b", "qa", n=2), "m", list_size=2, shuffled_lists=3)
                if it.kind == LISTWISE]) == 2  # a list of two has one other order

    # each list is labelled with a ranking of its own; the filter keeps or drops each on its own
    relevant = "a-p3"
    labels = _labels(items, {relevant}, order=[])
    for k, item in enumerate(lists):
        first = item.docids.index(relevant)
        rest = [i for i in range(5) if i != first]
        labels[item.key]["order"] = [first, *rest] if k != 2 else [*rest, first]  # list 2: relevant last
    out = assemble([request], items, labels, {}, ConsistencyFilter(0.5))
    assert [d["state"] for d in out.decisions] == ["kept", "kept", "dropped", "kept"]
    assert [d["key"] for d in out.decisions] == [it.key for it in lists]
    assert [r["id"] for r in out.sft] == [lists[k].key for k in (0, 1, 3)]
    assert all(r["teacher_ranking"][0] == relevant for r in out.rl)
    assert dict(out.per_domain["qa"]) == {"kept": 3, "dropped": 1}

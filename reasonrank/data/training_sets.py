"""Row schemas of the training sets the synthesis job writes and SFT / GRPO read (Parquet).

SFT row: a chat conversation whose assistant turn is `<think>reasoning</think><answer>[i] > [j] > …</answer>`,
built with the reranker's own prompt, so training and serving see the same text.
RL row: what GRPO needs to rebuild that prompt and score a rollout with the multi-view reward.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from reasonrank.prompt import PassageTruncator, assistant_turn, listwise_messages


@dataclass(frozen=True)
class SFTSample:
    id: str
    qid: str
    domain: str
    messages: list[dict[str, str]]  # system, user, assistant

    @staticmethod
    def from_listwise(id: str, qid: str, domain: str, query: str, passages: Sequence[str], reasoning: str,
                      order: Sequence[int], truncate: PassageTruncator | None = None) -> "SFTSample":
        """`order`: 0-based indices into `passages`, best first (the teacher's ranking)."""
        if sorted(order) != list(range(len(passages))):
            raise ValueError(f"sample {id}: order {list(order)} is not a permutation of {len(passages)} passages")
        messages = listwise_messages(query, passages, truncate)
        messages.append({"role": "assistant", "content": assistant_turn(reasoning, order)})
        return SFTSample(id, qid, domain, messages)

    def to_record(self) -> dict[str, Any]:
        return asdict(self)

    @staticmethod
    def from_record(record: dict[str, Any]) -> "SFTSample":
        return SFTSample(record["id"], record["qid"], record["domain"],
                         [dict(m) for m in record["messages"]])


@dataclass(frozen=True)
class RLSample:
    id: str
    qid: str
    domain: str
    query: str
    docids: list[str]  # the initial (first-stage) list, in prompt order
    passages: list[str]  # their texts, same order
    teacher_ranking: list[str]  # the teacher's listwise order of `docids`, best first
    relevant_docids: list[str]  # the teacher-mined relevant ids (pointwise labels)
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        if len(self.docids) != len(self.passages):
            raise ValueError(f"sample {self.id}: {len(self.docids)} docids but {len(self.passages)} passages")
        if sorted(self.teacher_ranking) != sorted(self.docids):
            raise ValueError(f"sample {self.id}: teacher_ranking is not a permutation of docids")
        unknown = set(self.relevant_docids) - set(self.docids)
        if unknown:
            raise ValueError(f"sample {self.id}: relevant ids not in the list: {sorted(unknown)}")

    def messages(self, truncate: PassageTruncator | None = None) -> list[dict[str, str]]:
        """The prompt a rollout answers: the reranker's listwise prompt over `passages`."""
        return listwise_messages(self.query, self.passages, truncate)

    def to_record(self) -> dict[str, Any]:
        record = asdict(self)
        record["extra"] = dict(self.extra) or None
        return record

    @staticmethod
    def from_record(record: dict[str, Any]) -> "RLSample":
        return RLSample(record["id"], record["qid"], record["domain"], record["query"],
                        list(record["docids"]), list(record["passages"]), list(record["teacher_ranking"]),
                        list(record["relevant_docids"]), dict(record.get("extra") or {}))

"""Row schemas of the training sets the synthesis job writes and SFT / GRPO read (Parquet).

SFT row: a chat conversation whose assistant turn is `<think>reasoning</think><answer>[i] > [j] > …</answer>`,
built with the reranker's own prompt, so training and serving see the same text.
RL row: what GRPO needs to rebuild a rollout's prompt and score it: its `task` (`reasonrank.tasks`; ReasonRank's
listwise window with the multi-view reward unless the row says otherwise) reads the row's fields.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from reasonrank.prompt import PassageTruncator, assistant_turn, listwise_messages
from reasonrank.tasks import DEFAULT_TASK, TASKS, task_named


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
    domain: str  # also picks the prompt's family for R1-Ranker's tasks (`reasonrank.tasks.families.family_of`)
    query: str  # the query, or the context the candidates are ranked for (a user's history, a question)
    docids: list[str]  # the initial (first-stage) list, in prompt order
    passages: list[str]  # their texts, same order
    teacher_ranking: list[str]  # the teacher's listwise order of `docids`, best first (empty where the task needs none)
    relevant_docids: list[str]  # the teacher-mined relevant ids (pointwise labels); R1-Ranker: the one positive
    extra: dict[str, Any] = field(default_factory=dict)
    task: str = DEFAULT_TASK  # what the row asks of the model (`reasonrank.tasks.TASKS`)

    def __post_init__(self):
        if len(self.docids) != len(self.passages):
            raise ValueError(f"sample {self.id}: {len(self.docids)} docids but {len(self.passages)} passages")
        if self.task not in TASKS:
            raise ValueError(f"sample {self.id}: unknown task {self.task!r}; known: {sorted(TASKS)}")
        if self.teacher_ranking and sorted(self.teacher_ranking) != sorted(self.docids):
            raise ValueError(f"sample {self.id}: teacher_ranking is not a permutation of docids")
        unknown = set(self.relevant_docids) - set(self.docids)
        if unknown:
            raise ValueError(f"sample {self.id}: relevant ids not in the list: {sorted(unknown)}")
        TASKS[self.task].validate(self)

    def messages(self, truncate: PassageTruncator | None = None) -> list[dict[str, str]]:
        """The prompt a rollout answers: its task's prompt over `passages`."""
        return task_named(self.task).messages(self, truncate)

    def to_record(self) -> dict[str, Any]:
        record = asdict(self)
        record["extra"] = dict(self.extra) or None
        return record

    @staticmethod
    def from_record(record: dict[str, Any]) -> "RLSample":
        """A row as written; rows written before tasks existed are listwise windows."""
        return RLSample(record["id"], record["qid"], record["domain"], record["query"],
                        list(record["docids"]), list(record["passages"]), list(record["teacher_ranking"]),
                        list(record["relevant_docids"]), dict(record.get("extra") or {}),
                        record.get("task") or DEFAULT_TASK)

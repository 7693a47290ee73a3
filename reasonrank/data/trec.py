"""TREC qrels (`qid 0 docid rel`) and run (`qid Q0 docid rank score tag`) files, and the id-and-text TSV
files TREC DL and MS MARCO distribute (topics `qid<TAB>text`, the collection `pid<TAB>text`).

trec_eval orders a run by score (held as a 32-bit float), not by rank, and breaks ties by docid: a run
must therefore carry scores that strictly decrease with rank, or the evaluated order is not the order
written. `write_run` guarantees it. Runs are read back as qid -> {docid: score} in score order, best
first (ties keep file order).
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np

from reasonrank import storage

Qrels = dict[str, dict[str, int]]
Run = dict[str, dict[str, float]]
Ranking = Sequence[str] | Sequence[tuple[str, float]] | Mapping[str, float]


class TrecFormatError(ValueError):
    """A malformed line in a TREC file; the message names the file and the line."""


def _lines(path: str | Path) -> Iterable[tuple[int, list[str]]]:
    with storage.open_file(str(path)) as f:  # local or object storage (s3://, gs://, ...)
        for number, line in enumerate(f, start=1):
            if line.strip():
                yield number, line.split()


def read_qrels(path: str | Path) -> Qrels:
    """qid -> {docid: graded relevance}."""
    qrels: Qrels = {}
    for number, fields in _lines(path):
        if len(fields) != 4:
            raise TrecFormatError(
                f"{path}:{number}: a qrels line has 4 fields (qid iter docid rel), got {len(fields)}")
        qid, _, docid, rel = fields
        try:
            qrels.setdefault(qid, {})[docid] = int(rel)
        except ValueError:
            raise TrecFormatError(f"{path}:{number}: relevance {rel!r} is not an integer") from None
    return qrels


def read_id_text(path: str | Path) -> list[tuple[str, str]]:
    """(id, text) pairs of a TSV file of `id<TAB>text` lines (TREC DL topics, the MS MARCO collection)."""
    pairs = []
    with storage.open_file(str(path)) as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            fields = line.rstrip("\r\n").split("\t", 1)
            if len(fields) != 2 or not fields[0]:
                raise TrecFormatError(f"{path}:{number}: expected `id<TAB>text`")
            pairs.append((fields[0], fields[1]))
    return pairs


def _check_ids(path: str | Path, qid: str, docids: Iterable[str]) -> None:
    """Ids are whitespace-separated fields in TREC files: one with a space would be read back wrong."""
    for name in (qid, *docids):
        if not name or any(ch.isspace() for ch in name):
            raise ValueError(f"{path}: id {name!r} (query {qid!r}) is empty or contains whitespace")


def write_qrels(path: str | Path, qrels: Mapping[str, Mapping[str, int]]) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        for qid, rels in qrels.items():
            _check_ids(path, qid, rels)
            for docid, rel in rels.items():
                f.write(f"{qid} 0 {docid} {int(rel)}\n")


def read_run(path: str | Path) -> Run:
    """qid -> {docid: score}, each query's docids in trec_eval's order (score descending)."""
    rows: dict[str, dict[str, tuple[float, int]]] = {}
    for number, fields in _lines(path):
        if len(fields) != 6:
            raise TrecFormatError(
                f"{path}:{number}: a run line has 6 fields (qid Q0 docid rank score tag), got {len(fields)}")
        qid, _, docid, rank, score, _ = fields
        try:
            value = float(score)
            int(rank)
        except ValueError:
            raise TrecFormatError(f"{path}:{number}: rank {rank!r} or score {score!r} is not a number") from None
        if not math.isfinite(value):
            raise TrecFormatError(f"{path}:{number}: score {score!r} is not finite")
        seen = rows.setdefault(qid, {})
        if docid in seen:
            raise TrecFormatError(f"{path}:{number}: docid {docid!r} appears twice for query {qid!r}")
        seen[docid] = (value, number)
    return {qid: {d: s for d, (s, _) in sorted(seen.items(), key=lambda kv: (-kv[1][0], kv[1][1]))}
            for qid, seen in rows.items()}


def strictly_decreasing(scores: Iterable[float]) -> list[float]:
    """`scores` with each one that is not below its predecessor lowered just below it. Compared as
    trec_eval stores them, in 32-bit floats: a difference only a 64-bit float sees is still a tie there."""
    fixed: list[float] = []
    previous: np.float32 | None = None
    for s in scores:
        s = float(s)
        if not math.isfinite(s):
            raise ValueError(f"score {s} is not finite")
        single = np.float32(s)
        if previous is not None and not single < previous:
            single = np.nextafter(previous, np.float32(-np.inf))
            s = float(single)
        fixed.append(s)
        previous = single
    return fixed


def _docids_and_scores(ranking: Ranking) -> tuple[list[str], list[float]]:
    if isinstance(ranking, Mapping):
        items = sorted(ranking.items(), key=lambda kv: -kv[1])  # stable: ties keep the mapping's order
        return [d for d, _ in items], strictly_decreasing([s for _, s in items])
    items = list(ranking)
    if items and not isinstance(items[0], str):
        return [d for d, _ in items], strictly_decreasing([s for _, s in items])
    return items, [float(len(items) - i) for i in range(len(items))]


def write_run(path: str | Path, run: Mapping[str, Ranking], tag: str = "reasonrank") -> None:
    """Write rankings: docid lists (best first) get scores n, n-1, …, 1; (docid, score) pairs keep their
    order, {docid: score} mappings are sorted by score; given scores are kept but lowered where they do
    not strictly decrease (ties), so trec_eval reads back exactly the order written."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        for qid, ranking in run.items():
            docids, scores = _docids_and_scores(ranking)
            if len(set(docids)) != len(docids):
                raise ValueError(f"{path}: query {qid!r} ranks a docid twice")
            _check_ids(path, qid, docids)
            for rank, (docid, score) in enumerate(zip(docids, scores), start=1):
                f.write(f"{qid} Q0 {docid} {rank} {score!r} {tag}\n")

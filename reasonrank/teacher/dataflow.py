"""Synthesis as Ray Data operations, so that the job's driver holds counts and never a label row.

    requests ──flat_map──▶ items ──drop labelled──▶ to label ──TeacherLabeler──▶ labels/, errors/ parts
    requests + labels/ + errors/ ──groupby(qid).map_groups(assemble)──▶ pointwise, listwise, filter, sft, rl,
                                                                        errors tables and counts

Items are made from the requests in Ray tasks (`ItemSpec`); the items already labelled are dropped by one
actor that holds the set of labelled keys (`Unlabelled`). A query's pointwise and listwise labels meet in one
group, where `assemble` joins them, filters each list and builds the SFT and RL rows, as it does for one query
in memory; each group also emits its counts (`count` rows), which are summed by name. Each output table is
written with `write_parquet` and combined, part by part, into one file by a Ray task.
"""
from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import logging
import math
import uuid
from collections import Counter
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from reasonrank import storage
from reasonrank.prompt import PassageTruncator
from reasonrank.teacher.assemble import STATES, assemble, outstanding_errors
from reasonrank.teacher.consistency import ConsistencyFilter
from reasonrank.teacher.items import LabelItem, teacher_items
from reasonrank.teacher.store import PART_PREFIX
from reasonrank.types import Candidate, Query, RerankRequest

TABLES = ("pointwise", "listwise", "filter", "sft", "rl", "errors")
COUNT = "count"  # the rows of a group's counts in the assembled dataset
LABELS_PER_PARTITION = 20_000


def configure_ray_data() -> None:
    """Outputs in the same row order on every run (blocks kept in order), and Ray Data's progress bars and
    execution notes off the console; its log file (ray-data.log in the Ray session's logs) keeps them."""
    import ray.data

    ctx = ray.data.DataContext.get_current()
    ctx.execution_options.preserve_order = True
    ctx.enable_progress_bars = False
    ctx.print_on_execution_start = False
    for handler in logging.getLogger("ray.data").handlers:
        if not isinstance(handler, logging.FileHandler):
            handler.setLevel(logging.ERROR)


@functools.lru_cache(maxsize=4)
def truncator(tokenizer: str | None, max_tokens: int | None) -> PassageTruncator:
    """The passage cut (loaded once per process): `max_tokens` of `tokenizer`, or none without one."""
    if tokenizer is None:
        return PassageTruncator(None, None)
    from transformers import AutoTokenizer

    return PassageTruncator(AutoTokenizer.from_pretrained(tokenizer), max_tokens)


@dataclasses.dataclass(frozen=True)
class ItemSpec:
    """What makes a query's items (see `items.teacher_items`): shipped to the Ray tasks that make them."""
    model: str
    window_size: int
    tokenizer: str | None
    max_tokens: int | None
    use_answer: bool
    shuffled_lists: int

    def truncate(self) -> PassageTruncator:
        return truncator(self.tokenizer, self.max_tokens)

    def items(self, request: RerankRequest) -> list[LabelItem]:
        return teacher_items(request, self.model, self.window_size, self.truncate(), self.use_answer,
                             self.shuffled_lists)

    def item_rows(self, row: dict[str, Any]) -> list[dict[str, Any]]:
        return [item.to_row() for item in self.items(request_from_row(row))]


def request_row(request: RerankRequest) -> dict[str, Any]:
    q = request.query
    return {"qid": q.qid, "text": q.text, "domain": q.domain, "answer": q.answer,
            "docids": [c.docid for c in request.candidates], "passages": [c.text for c in request.candidates],
            "scores": [c.score for c in request.candidates]}


def request_from_row(row: dict[str, Any]) -> RerankRequest:
    return RerankRequest.of(Query(row["qid"], row["text"], row["domain"], row["answer"]),
                            [Candidate(d, t, s) for d, t, s in zip(row["docids"], row["passages"], row["scores"])])


def _labelled_keys(path: str) -> set[str]:
    fs, root = storage.filesystem(path)
    keys: set[str] = set()
    for name in storage.listdir(path):
        if name.startswith(PART_PREFIX) and name.endswith(".parquet"):
            keys.update(pq.read_table(f"{root}/{name}", columns=["key"], filesystem=fs).column("key").to_pylist())
    return keys


class Unlabelled:
    """Ray Data UDF (one actor): the items of a batch that have no label under `labels_path` yet."""

    def __init__(self, labels_path: str):
        self.done = _labelled_keys(labels_path)

    def __call__(self, batch: pa.Table) -> pa.Table:
        keep = [key not in self.done for key in batch.column("key").to_pylist()]
        return batch.filter(pa.array(keep, pa.bool_()))


def parts_dataset(path: str, source: str):
    """The rows of the parts under `path` as (qid, source, order, payload) rows, `order` being the part's name
    (the store's "first part in name order wins"); None when there are none."""
    import ray.data

    parts = [n for n in storage.listdir(path) if n.startswith(PART_PREFIX) and n.endswith(".parquet")]
    if not parts:
        return None
    fs, root = storage.filesystem(path)
    files = [f"{root}/{name}" for name in parts]
    return ray.data.read_parquet(files, filesystem=_arrow_fs(fs), include_paths=True).map_batches(
        functools.partial(_as_payload, source), batch_format="pyarrow")


def requests_dataset(requests: list[RerankRequest], rows_per_block: int = 64):
    import ray.data

    return ray.data.from_items([request_row(r) | {"position": i} for i, r in enumerate(requests)],
                               override_num_blocks=max(1, math.ceil(len(requests) / rows_per_block)))


def request_payloads(requests_ds):
    return requests_ds.map_batches(functools.partial(_as_payload, "request"), batch_format="pyarrow")


def _as_payload(source: str, batch: pa.Table) -> pa.Table:
    rows = batch.to_pylist()
    return pa.table({"qid": [r["qid"] for r in rows], "source": [source] * len(rows),
                     "order": [r.pop("path", "") for r in rows],
                     "payload": [json.dumps(r, ensure_ascii=False) for r in rows]})


def assemble_query(group: pa.Table, spec: ItemSpec, alpha: float) -> pa.Table:
    """map_groups UDF: one query's request, labels and errors → its rows of every output table (`table`,
    `record` as JSON) and its counts (`table` = "count", `record` the name, `count`), each row placed by the
    request's position in the job and its own within the query (`position`, `seq`): the groups come out of
    the shuffle in no fixed order, the tables are written in this one."""
    rows = sorted(group.to_pylist(), key=lambda r: r["order"])  # part-name order, as the store reads
    requests = [json.loads(r["payload"]) for r in rows if r["source"] == "request"]
    out: list[tuple[str, str, int]] = []
    position = -1
    if requests:  # labels of a query that is no longer asked for are not used
        position = requests[0]["position"]
        out = _assemble(request_from_row(requests[0]), rows, spec, ConsistencyFilter(alpha))
    tables, records, counts = zip(*out) if out else ((), (), ())
    return pa.table({"table": pa.array(tables, pa.string()), "record": pa.array(records, pa.string()),
                     "count": pa.array(counts, pa.int64()), "position": pa.array([position] * len(out), pa.int64()),
                     "seq": pa.array(range(len(out)), pa.int64())})


def _assemble(request: RerankRequest, rows: list[dict[str, Any]], spec: ItemSpec,
              consistency: ConsistencyFilter) -> list[tuple[str, str, int]]:
    labels: dict[str, dict[str, Any]] = {}
    for r in rows:
        if r["source"] == "label":
            row = json.loads(r["payload"])
            labels.setdefault(row["key"], row)
    errors = outstanding_errors((json.loads(r["payload"]) for r in rows if r["source"] == "error"), labels)
    items = spec.items(request)
    assembly = assemble([request], items, labels, errors, consistency, spec.truncate())
    out = [(name, json.dumps(record, ensure_ascii=False), 0)
           for name, records in (("pointwise", assembly.pointwise), ("listwise", assembly.listwise),
                                 ("filter", assembly.decisions), ("sft", assembly.sft), ("rl", assembly.rl),
                                 ("errors", assembly.errors))
           for record in records]
    mine = [labels[i.key] for i in items if i.key in labels]
    counts: Counter = Counter(labelled=len(mine), failed=len(assembly.errors),
                              tokens_in=sum(r["prompt_tokens"] for r in mine),
                              tokens_out=sum(r["completion_tokens"] for r in mine),
                              queries=int(bool(assembly.decisions)), lists=len(assembly.decisions))
    counts.update(f"failure_reason/{e['reason']}" for e in assembly.errors)
    counts.update(f"retried_for/{reason}" for r in mine for reason in r["retried_for"])
    counts.update(f"state/{d['state']}" for d in assembly.decisions)
    for domain, states in assembly.per_domain.items():
        counts.update({f"domain/{domain}/{state}": n for state, n in states.items()})
    return out + [(COUNT, name, n) for name, n in counts.items()]


def assemble_dataset(requests_ds, labels_path: str, errors_path: str, spec: ItemSpec, alpha: float,
                     n_items: int):
    """Every query's output rows and counts, materialized in the object store (one shuffle partition per
    LABELS_PER_PARTITION items: Ray's default of 200 costs minutes of overhead on a small job)."""
    sources = [request_payloads(requests_ds)] + [
        ds for ds in (parts_dataset(labels_path, "label"), parts_dataset(errors_path, "error")) if ds is not None]
    union = sources[0].union(*sources[1:]) if len(sources) > 1 else sources[0]
    partitions = max(1, math.ceil(n_items / LABELS_PER_PARTITION))
    return union.groupby("qid", num_partitions=partitions).map_groups(
        assemble_query, fn_kwargs={"spec": spec, "alpha": alpha}, batch_format="pyarrow").materialize()


def per_domain(counts: dict[str, int]) -> dict[str, dict[str, int]]:
    domains = sorted({name.split("/")[1] for name in counts if name.startswith("domain/")})
    return {d: {s: counts.get(f"domain/{d}/{s}", 0) for s in STATES} for d in domains}


def prefixed(counts: dict[str, int], prefix: str) -> dict[str, int]:
    return {name[len(prefix):]: n for name, n in counts.items() if name.startswith(prefix)}


def write_tables(assembled, out_dir: str, schemas: dict[str, pa.Schema]) -> dict[str, int]:
    """Each output table to `<out_dir>/<name>.parquet`, and the groups' counts summed by name (a few dozen numbers
    reach the driver, no row). One Ray Data write stages every row, tagged with its table, as parts sorted by
    (`position`, `seq`); a Ray task then combines each table's rows into its one file and sums the counts.
    `schemas` fixes a table's schema (otherwise inferred)."""
    import ray

    staging = storage.join(out_dir, f".parts-{uuid.uuid4().hex[:8]}")
    fs, root = storage.filesystem(staging)
    assembled.sort(["position", "seq"]).write_parquet(root, filesystem=_arrow_fs(fs))
    return ray.get(ray.remote(num_cpus=0.25)(_combine_all).remote(staging, out_dir, schemas))


def _combine_all(staging: str, out_dir: str, schemas: dict[str, pa.Schema]) -> dict[str, int]:
    """Two passes over the staged parts, one part in memory at a time: the first sums the counts and infers each
    table's schema (unified across parts: a column null in one part, typed in another), the second writes every
    table's rows, in order, to its one file."""
    parts = [storage.join(staging, n) for n in storage.listdir(staging) if n.endswith(".parquet")]
    counts: Counter = Counter()
    found: dict[str, list[pa.Schema]] = {name: [] for name in TABLES}
    for part in parts:
        rows = _read(part)
        counted = _rows_of(rows, COUNT)
        for name, n in zip(counted.column("record").to_pylist(), counted.column("count").to_pylist()):
            counts[name] += n
        for name in TABLES:
            if name not in schemas and (records := _records(rows, name)).num_rows:
                found[name].append(records.schema)
    final = {name: schemas.get(name) or (pa.unify_schemas(found[name], promote_options="permissive")
                                         if found[name] else pa.schema([])) for name in TABLES}
    with contextlib.ExitStack() as stack:
        writers = {name: pq.ParquetWriter(stack.enter_context(storage.writing(
            storage.join(out_dir, f"{name}.parquet"))), final[name]) for name in TABLES}
        for writer in writers.values():
            stack.callback(writer.close)
        for part in parts:
            rows = _read(part)
            for name, writer in writers.items():
                if (records := _records(rows, name)).num_rows:
                    writer.write_table(records.select(final[name].names).cast(final[name]))
    fs, root = storage.filesystem(staging)
    if fs.exists(root):
        fs.rm(root, recursive=True)
    return {name: int(n) for name, n in counts.items()}


def _read(part: str) -> pa.Table:
    fs, root = storage.filesystem(part)
    return pq.read_table(root, filesystem=fs)


def _rows_of(rows: pa.Table, table: str) -> pa.Table:
    """The staged rows that belong to `table`, in their order."""
    return rows.filter(pc.equal(rows.column("table"), table))


def _records(rows: pa.Table, table: str) -> pa.Table:
    """The JSON records of `table` among the staged rows, as a typed table."""
    return pa.Table.from_pylist([json.loads(r) for r in _rows_of(rows, table).column("record").to_pylist()])


def _arrow_fs(fs: Any):
    """A pyarrow filesystem for Ray Data over the project's fsspec one (local stays local)."""
    import pyarrow.fs as pafs

    if getattr(fs, "protocol", None) in ("file", ("file", "local")):
        return pafs.LocalFileSystem()
    return pafs.PyFileSystem(pafs.FSSpecHandler(fs))

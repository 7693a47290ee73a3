"""Record tables (a list of dicts) as JSON Lines or Parquet, chosen by the file's extension.

Paths are local or URIs (s3://, gs://, memory://, …) through `reasonrank.storage`'s fsspec filesystems;
pyarrow reads and writes Parquet on the same filesystem objects.
"""
from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from reasonrank import storage

FORMATS = (".jsonl", ".parquet")


def _format(path: str) -> str:
    for ext in FORMATS:
        if path.endswith(ext):
            return ext
    raise ValueError(f"{path}: unsupported table format; use one of {', '.join(FORMATS)}")


def read_records(path: str | os.PathLike) -> list[dict[str, Any]]:
    """All records of a .jsonl or .parquet table."""
    path = os.fspath(path)
    ext = _format(path)
    fs, root = storage.filesystem(path)
    if ext == ".parquet":
        return pq.read_table(root, filesystem=fs).to_pylist()
    records = []
    with fs.open(root, "r", encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{number}: not valid JSON: {e}") from None
            if not isinstance(record, dict):
                raise ValueError(f"{path}:{number}: expected a JSON object, got {type(record).__name__}")
            records.append(record)
    return records


def write_records(path: str | os.PathLike, records: Iterable[Mapping[str, Any]]) -> None:
    """Write `records` as one .jsonl or .parquet table, replacing any file there."""
    path = os.fspath(path)
    rows = [dict(r) for r in records]
    if _format(path) == ".jsonl":
        storage.write_jsonl_atomic(path, rows)
        return
    try:
        table = pa.Table.from_pylist(rows)
    except (pa.ArrowInvalid, pa.ArrowTypeError) as e:
        raise ValueError(f"{path}: records do not fit one Parquet schema: {e}") from None
    fs, root = storage.filesystem(path)
    fs.makedirs(root.rsplit("/", 1)[0], exist_ok=True)
    pq.write_table(table, root, filesystem=fs)

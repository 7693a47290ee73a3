"""Rows kept as Parquet parts under a storage path (local folder, s3://, gs://): the job's resume point.

Each batch of results is one part, written under a hidden temporary name and renamed into place, so a
killed writer leaves no half part behind (readers skip names that start with a dot). Reading dedupes by
item key — the first part in name order wins — so a batch that was written twice (a Ray task retried
after its actor died mid-write) still yields each item once.
"""
from __future__ import annotations

import uuid
from collections.abc import Iterable
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from reasonrank import storage

PART_PREFIX = "part-"


class PartStore:
    def __init__(self, path: str, schema: pa.Schema, key: str = "key"):
        self.path = path
        self.schema = schema
        self.key = key

    def write(self, rows: list[dict[str, Any]]) -> str | None:
        """Write `rows` as one new part; returns its path (None for no rows)."""
        if not rows:
            return None
        try:
            table = pa.Table.from_pylist(rows, schema=self.schema)
        except (pa.ArrowInvalid, pa.ArrowTypeError, KeyError) as e:
            raise ValueError(f"{self.path}: rows do not fit the part schema: {e}") from None
        name = f"{PART_PREFIX}{uuid.uuid4().hex}.parquet"
        fs, root = storage.filesystem(storage.join(self.path, name))
        folder, _ = root.rsplit("/", 1)
        fs.makedirs(folder, exist_ok=True)
        tmp = f"{folder}/.{name}.tmp"
        with fs.open(tmp, "wb") as f:
            pq.write_table(table, f)
        fs.mv(tmp, root)
        return storage.join(self.path, name)

    def parts(self) -> list[str]:
        return [n for n in storage.listdir(self.path) if n.startswith(PART_PREFIX) and n.endswith(".parquet")]

    def rows(self) -> Iterable[dict[str, Any]]:
        """Every row of every part, in part-name order (duplicates included)."""
        for name in self.parts():
            path = storage.join(self.path, name)
            try:
                with storage.open_file(path, "rb") as f:
                    table = pq.read_table(f)
            except (OSError, pa.ArrowException) as e:
                raise ValueError(f"{path}: unreadable part: {e}") from None
            yield from table.to_pylist()

    def read(self) -> dict[str, dict[str, Any]]:
        """Rows by key, each key once (the first part in name order wins)."""
        out: dict[str, dict[str, Any]] = {}
        for row in self.rows():
            out.setdefault(row[self.key], row)
        return out

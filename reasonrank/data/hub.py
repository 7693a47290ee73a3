"""Rows of a benchmark's table, from the Hugging Face hub or from a local copy in the layout the benchmark
distributes: one reader for the BEIR and R2MED loaders (BRIGHT's hub layout has its own, in `bright`)."""
from __future__ import annotations

import csv
import os
from collections.abc import Iterable
from typing import Any

from reasonrank.data.tables import read_records


def rows(source: str, local_file: str, config: str | None, split: str,
         cache_dir: str | None = None) -> Iterable[dict[str, Any]]:
    """`local_file` (.jsonl, or .tsv with a header line) under `source` when `source` is a folder; else the
    hub dataset `source`'s `config` / `split`, read with `datasets`."""
    if os.path.isdir(source):
        path = os.path.join(source, local_file)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{source}: no {local_file}")
        if path.endswith(".tsv"):
            with open(path, encoding="utf-8", newline="") as f:
                return list(csv.DictReader(f, delimiter="\t"))
        return read_records(path)
    import datasets

    return datasets.load_dataset(source, config, split=split, cache_dir=cache_dir)

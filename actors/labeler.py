"""TeacherLabeler: the Ray Data UDF behind synthesis, run by a pool of actors.

    ds.map_batches(TeacherLabeler, fn_constructor_kwargs=…, batch_format="pyarrow",
                   compute=ray.data.ActorPoolStrategy(size=N), num_cpus=0.5)

Each actor owns one OpenAIEngine on the event loop Ray Data runs async UDFs on, so the requests of all
the batches it is given share one client, one concurrency bound and one rate limiter, and many are in
flight at once. A finished batch is written by the actor itself as a label part and an error part under
the storage path, before the batch is reported done: what was labelled is kept even if the job dies
right after. It returns one row of counts per batch (labels, errors, tokens): what the driver adds up.
"""
from __future__ import annotations

import asyncio
from typing import Any

import pyarrow as pa

from reasonrank.config import EngineConfig
from reasonrank.engines.base import SamplingParams
from reasonrank.engines.openai_engine import OpenAIEngine
from reasonrank.teacher.items import LabelItem
from reasonrank.teacher.labeling import ERROR_SCHEMA, LABEL_SCHEMA, label_item
from reasonrank.teacher.store import PartStore


class TeacherLabeler:
    def __init__(self, engine: dict[str, Any], sampling: dict[str, Any], labels_path: str, errors_path: str):
        self.engine = OpenAIEngine(EngineConfig.model_validate(engine))
        self.params = SamplingParams(**sampling)
        self.labels = PartStore(labels_path, LABEL_SCHEMA)
        self.errors = PartStore(errors_path, ERROR_SCHEMA)

    async def __call__(self, batch: pa.Table) -> pa.Table:
        items = [LabelItem.from_row(row) for row in batch.to_pylist()]
        results = await asyncio.gather(*(label_item(self.engine, item, self.params) for item in items))
        labels = [row for status, row in results if status == "label"]
        errors = [row for status, row in results if status == "error"]
        await asyncio.to_thread(self.labels.write, labels)
        await asyncio.to_thread(self.errors.write, errors)
        return pa.table({"label": [len(labels)], "error": [len(errors)],
                         "tokens_in": [sum(row["prompt_tokens"] or 0 for row in labels)],
                         "tokens_out": [sum(row["completion_tokens"] or 0 for row in labels)]})

    def __del__(self):  # Ray Data drops the UDF when its actor shuts down gracefully
        self.engine.close()

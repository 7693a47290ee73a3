"""What a stage's results depend on, recorded beside them, so that a rerun resumes only its own work.

Every stage resumes from what its output folder holds (evaluate's parts, GRPO's checkpoints, SFT's Ray Train
run, synthesis's labels). A folder is only worth resuming from if the rerun would have produced the same
thing: the same model, data, strategy, sampling and seeds. The first run writes `fingerprint.json` — its
config flattened to dotted keys, less the keys that only say where or how fast it runs (output folders,
replicas, CPUs, retries, logging) — and a rerun whose fingerprint differs is refused before any work,
naming the keys that changed. An engine or a strategy holds only the keys it reads (`OneOf`), so a key the
chosen part would ignore cannot be set, nor change a fingerprint.
"""
from __future__ import annotations

import fnmatch
import json
from collections.abc import Iterable
from typing import Any

from pydantic import BaseModel

from reasonrank import storage
from reasonrank.config import ConfigError, EngineConfig, is_runtime

FILE = "fingerprint.json"

# Engine keys that change how fast or where an engine runs, never what it generates (as the backends mark them).
ENGINE_RUNTIME = tuple(sorted({key for backend in EngineConfig.members for key, field in backend.model_fields.items()
                               if is_runtime(field)}))
# Keys that never determine results, wherever they appear (glob patterns over dotted keys).
ALWAYS_IGNORED = ("output_dir", "ray_num_cpus", "replicas", "*.replicas", "num_cpus", "*.num_cpus",
                  "num_gpus", "*.num_gpus", "num_cpus_per_replica", "num_gpus_per_replica",
                  *(f"{prefix}engine.{key}" for key in ENGINE_RUNTIME for prefix in ("", "*.")))


class FingerprintMismatch(ConfigError):
    """The output folder holds work done with a different config; the message names the keys that changed."""


def flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    """`{"a": {"b": 1}}` → `{"a.b": 1}`; lists and scalars are leaves."""
    if isinstance(data, dict) and data:
        out: dict[str, Any] = {}
        for key, value in data.items():
            out.update(flatten(value, f"{prefix}{key}."))
        return out
    return {prefix.rstrip("."): data}


def fingerprint(config: BaseModel | dict[str, Any], ignore: Iterable[str] = ()) -> dict[str, Any]:
    """The dotted keys of `config` that determine results: all of them but `ALWAYS_IGNORED` and `ignore`."""
    data = config.model_dump(mode="json") if isinstance(config, BaseModel) else config
    patterns = (*ALWAYS_IGNORED, *ignore)
    return {k: v for k, v in sorted(flatten(data).items())
            if not any(fnmatch.fnmatchcase(k, p) for p in patterns)}


def changed_keys(before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    """Keys whose values differ; a key one side lacks counts as None there, so a key added to a config later with
    a None default leaves the fingerprints of older runs valid."""
    return sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))


def check_and_record(folder: str, stage: str, current: dict[str, Any], moved_by: str = "output_dir") -> bool:
    """Refuse (FingerprintMismatch) when `folder` holds `stage` work done with another fingerprint; record
    `current` when it holds none. Returns True when a matching fingerprint was already there (a resume).
    `moved_by` is the config key that names the folder (said in the message)."""
    path = storage.join(folder, FILE)
    if storage.exists(path):
        with storage.open_file(path) as f:
            recorded = json.load(f)
        before = recorded.get("fingerprint", {})
        changed = changed_keys(before, current)
        if recorded.get("stage") != stage:
            raise FingerprintMismatch(f"{folder} holds the output of a {recorded.get('stage')} run, not {stage}: "
                                      f"write elsewhere (--set {moved_by}=…)")
        if changed:
            shown = "; ".join(f"{k}: {_show(before.get(k))} → {_show(current.get(k))}" for k in changed[:12])
            more = f" (and {len(changed) - 12} more)" if len(changed) > 12 else ""
            raise FingerprintMismatch(
                f"{folder} holds a {stage} run made with a different config, so resuming it would mix results: "
                f"{shown}{more}. Rerun with the config it was made with to resume, write elsewhere "
                f"(--set {moved_by}=…), or delete {folder} to start fresh")
        return True
    storage.write_text_atomic(path, json.dumps({"stage": stage, "fingerprint": current}, indent=1))
    return False


def _show(value: Any) -> str:
    return "unset" if value is None else json.dumps(value)

"""The keys each engine backend and each ranking strategy reads, as their config models declare them: the
tables of docs/configuration.md (`python -m reasonrank.config_reference` prints them)."""
from __future__ import annotations

from typing import Any

from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from reasonrank.config import EngineConfig, OneOf, is_runtime
from reasonrank.strategies import StrategyConfig


def table(piece: type[OneOf], section: str) -> str:
    """One row per member of `piece`: its tag, then each key it reads with its default; keys that change only
    where or how fast it runs (left out of fingerprints) are marked †."""
    rows = [f"| `{section}.{piece.key}` | keys it reads (default) |", "| --- | --- |"]
    for tag, member in piece.by_tag().items():
        keys = ", ".join(_key(name, field) for name, field in member.model_fields.items() if name != piece.key)
        rows.append(f"| `{tag}` | {keys} |")
    return "\n".join(rows)


def _key(name: str, field: Any) -> str:
    return f"`{name}` ({_default(field.default)}){' †' if is_runtime(field) else ''}"


def _default(value: Any) -> str:
    if value is PydanticUndefined:
        return "required"
    if isinstance(value, BaseModel):
        return ", ".join(f"{k}: {_default(v)}" for k, v in value.model_dump().items())
    return "none" if value is None else str(value).lower() if isinstance(value, bool) else str(value)


def reference() -> str:
    return f"{table(EngineConfig, 'engine')}\n\n{table(StrategyConfig, 'strategy')}\n"


if __name__ == "__main__":
    print(reference(), end="")

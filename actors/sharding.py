"""How a batch is shared out over a group of actors: one place for the splitting every actor group does.

`contiguous` keeps each actor's share in one piece, in order (rollout prompts, reward items: the results are
put back together by concatenation). `by_key` decides each item's share from the key it carries, not from
where it sits in the list, so a batch that comes back reordered is shared out the same way; a key seen twice
is an error, not a silent double.
"""
from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from typing import TypeVar

T = TypeVar("T")


def balanced_spans(n: int, parts: int) -> list[tuple[int, int]]:
    """`parts` contiguous (start, end) spans covering range(n), sizes differing by at most one."""
    if parts < 1:
        raise ValueError(f"cannot share {n} items over {parts} actors")
    base, extra = divmod(n, parts)
    spans, start = [], 0
    for i in range(parts):
        end = start + base + (i < extra)
        spans.append((start, end))
        start = end
    return spans


def contiguous(items: Sequence[T], parts: int) -> list[list[T]]:
    """`items` in `parts` contiguous shares (some empty when there are fewer items than parts)."""
    return [list(items[a:b]) for a, b in balanced_spans(len(items), parts)]


def by_key(items: Sequence[T], parts: int, key: Callable[[T], Hashable]) -> list[list[T]]:
    """Share r holds the items whose rank in the sorted keys is r, r + parts, r + 2·parts, …: the same
    shares whatever order `items` come in. Raises when two items carry the same key."""
    keyed = sorted(items, key=key)
    for a, b in zip(keyed, keyed[1:]):
        if key(a) == key(b):
            raise ValueError(f"two items carry the key {key(a)!r}: a batch must hold each item once")
    return [keyed[r::parts] for r in range(parts)]

"""A round of windows ranked at once: what the strategies that cut sequential rounds share.

`rank_round` yields every window of the round to the driver as one list (they run concurrently), parses each
answer into a complete ranking of its window (a malformed answer keeps the window's order) and logs each.
Rankings come back as orders (indices into each window, best first), so equal passages cannot be confused.
"""
from __future__ import annotations

from collections.abc import Generator, Sequence

from reasonrank.engines.base import Generation
from reasonrank.parsing import parse_ranking
from reasonrank.prompt import PassageTruncator
from reasonrank.strategies.base import EngineCall, RankingStrategy
from reasonrank.tasks.families import family_of
from reasonrank.types import Candidate, RerankRequest, WindowLog


def rank_round(strategy: RankingStrategy, request: RerankRequest, truncate: PassageTruncator,
               windows: Sequence[Sequence[Candidate]], spans: Sequence[tuple[int, int]], logs: list[WindowLog],
               ) -> Generator[list[EngineCall], list[Generation], list[list[int]]]:
    """The order the model gives each of `windows` (0-based, best first); `spans` are their places in the list,
    for the log. Each window's prompt is the query's family's list prompt (passages: the listwise prompt)."""
    family = family_of(request.query.domain)
    calls = [EngineCall(family.list_messages(request.query.text, [c.text for c in window], truncate), start, end)
             for window, (start, end) in zip(windows, spans)]
    generations = yield calls
    orders = []
    for window, call, gen in zip(windows, calls, generations):
        parsed = parse_ranking(gen.text, len(window))
        orders.append(parsed.order)
        logs.append(strategy.window_log(request, strategy.name, call, gen, parsed.well_formed,
                                        [window[i].docid for i in parsed.order]))
    return orders


def even_chunks(n: int, size: int) -> list[tuple[int, int]]:
    """(start, end) spans cutting range(n) into the fewest chunks of at most `size`, as even as they can be."""
    if n == 0:
        return []
    count = -(-n // size)
    bounds = [n * k // count for k in range(count + 1)]
    return list(zip(bounds, bounds[1:]))

"""IRanker's on-policy elimination episodes (`rl_task: elimination_episode`): the states the GRPO loop samples.

An episode starts from an item's full candidate list (an `elimination_step` row over every candidate, in the
item's order: the order iterative elimination is evaluated in). Each round the loop samples G responses to the
episode's current state; they form one GRPO group, each response scored by the step reward on its own
(`reasonrank.elimination_reward`). The next state is the current list less the candidate eliminated by the
policy's own elimination: the FIRST of the G responses that names a candidate. The G responses are independent
draws, so the first one that names a candidate is a draw from the policy given that it names one, whatever
the others say. Taking the best or the most common answer instead would walk the episode down the states a
better or more confident policy would reach, not this one's.

An episode ends (`ENDS`): when one candidate is left (`one_left`); when the elimination removed the positive
(`positive_eliminated`: the state is never updated past it, so every state shows the positive); when none of a
round's G responses names a candidate (`no_candidate`); after `max_rounds` eliminations (`round_cap`); or when
its step has all the groups it trains on (`step_full`).

A GRPO step trains on a fixed number of groups (the learners' batch is fixed), so `EpisodeStep` plays rounds
until the step has `groups` states: each round tops the live episodes up to `parallel` with fresh items and
samples the live states the step still needs, oldest episodes first.
"""
from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from reasonrank.data.training_sets import RLSample
from reasonrank.elimination import parse_elimination

ONE_LEFT = "one_left"
POSITIVE_ELIMINATED = "positive_eliminated"
NO_CANDIDATE = "no_candidate"
ROUND_CAP = "round_cap"
STEP_FULL = "step_full"
ENDS = (ONE_LEFT, POSITIVE_ELIMINATED, NO_CANDIDATE, ROUND_CAP, STEP_FULL)


@dataclass(frozen=True)
class EpisodeState:
    start: RLSample  # the item's row over its full candidate list
    remaining: tuple[int, ...]  # positions in `start`'s list still shown, in `start`'s order
    round: int = 1  # 1: the full list

    @classmethod
    def begin(cls, start: RLSample) -> EpisodeState:
        return cls(start, tuple(range(len(start.docids))))

    @property
    def row(self) -> RLSample:
        """The elimination step this state asks: the remaining candidates, numbered [1].. in `start`'s order."""
        s = self.start
        return dataclasses.replace(s, id=f"{s.id}-r{self.round}", docids=[s.docids[j] for j in self.remaining],
                                   passages=[s.passages[j] for j in self.remaining], teacher_ranking=[],
                                   task="elimination_step")


def eliminated(responses: Sequence[str], num_remaining: int) -> int | None:
    """The index among the remaining candidates that the first response naming one eliminates; None if none does."""
    for response in responses:
        parsed = parse_elimination(response, num_remaining)
        if parsed.named:
            return parsed.index
    return None


def advance(state: EpisodeState, responses: Sequence[str], max_rounds: int | None = None) -> EpisodeState | str:
    """The state after a round whose G responses are `responses`, or why the episode ends there (`ENDS`)."""
    k = eliminated(responses, len(state.remaining))
    if k is None:
        return NO_CANDIDATE
    if state.start.docids[state.remaining[k]] in state.start.relevant_docids:
        return POSITIVE_ELIMINATED
    remaining = state.remaining[:k] + state.remaining[k + 1:]
    if len(remaining) == 1:
        return ONE_LEFT
    if max_rounds is not None and state.round >= max_rounds:
        return ROUND_CAP
    return EpisodeState(state.start, remaining, state.round + 1)


class EpisodeStep:
    """One GRPO step's episodes: exactly `groups` states, played in rounds of at most `parallel` episodes.

        step = EpisodeStep(groups, parallel, max_rounds, draw)
        while states := step.next_round():
            step.record(<the G responses of each state, in order>)
    """

    def __init__(self, groups: int, parallel: int, max_rounds: int | None, draw: Callable[[], RLSample]):
        if not 1 <= parallel <= groups:
            raise ValueError(f"parallel episodes ({parallel}) must be between 1 and the step's groups ({groups})")
        self.groups, self.parallel, self.max_rounds, self.draw = groups, parallel, max_rounds, draw
        self.live: list[EpisodeState] = []
        self.playing: list[EpisodeState] = []  # the states of the round not yet recorded
        self.states: list[EpisodeState] = []  # every state sampled this step, in order
        self.rounds = 0
        self.ended: Counter[str] = Counter()

    def next_round(self) -> list[EpisodeState]:
        """The states to sample in the next round (empty: the step has its groups)."""
        if self.playing:
            raise RuntimeError("record the round played before asking for the next")
        need = self.groups - len(self.states)
        if not need:
            return []
        while len(self.live) < min(self.parallel, need):
            self.live.append(EpisodeState.begin(self.draw()))
        self.playing = self.live[:need]
        self.rounds += 1
        return list(self.playing)

    def record(self, responses: Sequence[Sequence[str]]) -> None:
        """The responses of each state of the round, in `next_round`'s order: every live episode moves on."""
        if len(responses) != len(self.playing):
            raise ValueError(f"{len(responses)} states' responses for a round of {len(self.playing)} states")
        waiting = self.live[len(self.playing):]  # not sampled this round (the step needed fewer groups)
        self.states.extend(self.playing)
        self.live = []
        for state, answers in zip(self.playing, responses):
            after = advance(state, answers, self.max_rounds)
            if isinstance(after, str):
                self.ended[after] += 1
            else:
                self.live.append(after)
        self.playing = []
        self.live.extend(waiting)
        if len(self.states) == self.groups:
            self.ended[STEP_FULL] += len(self.live)
            self.live = []

    def stats(self) -> dict[str, Any]:
        """For the step log: rounds played, states sampled, episodes ended by each cause, states per list size."""
        sizes = Counter(len(s.remaining) for s in self.states)
        return {"rounds": self.rounds, "states": len(self.states),
                "ended": {cause: self.ended[cause] for cause in ENDS},
                "candidates": {str(n): sizes[n] for n in sorted(sizes, reverse=True)}}

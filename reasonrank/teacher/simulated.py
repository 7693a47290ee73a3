"""SimulatedTeacher: a TEST DOUBLE for DeepSeek-R1 behind an OpenAI-compatible API on loopback.

Local runs, the tests and the benchmark need a teacher without the internet. This server answers the two
teacher prompts (pointwise relevance, listwise ranking) from known relevance labels, the way a reasoning
model would: reasoning text (in `reasoning_content` like DeepSeek-R1, or inline as `<think>` in the
content), then the answer. It has dials for what a real endpoint does to a client:

- `noise`: the share of verdicts flipped at random, pointwise and per passage in a listwise answer;
- `errors`: misjudgements the way a strong LLM makes them, at stated rates (misjudgement.py; off by default);
- `latency_s`: time before each answer;
- faults, a share of requests (or the first N attempts of every prompt): 429 with Retry-After, 500, a
  hang past the client's timeout, and a 200 whose JSON body is cut off.

Everything is deterministic given `seed`: a prompt's label depends only on the prompt, and whether an
attempt faults depends on the prompt and how many times that prompt was sent before. It is never used
when a real endpoint is configured (the synthesis job refuses the combination).
"""
from __future__ import annotations

import asyncio
import hashlib
import json
import math
import random
import re
import socket
import threading
import time
from collections import Counter
from collections.abc import Mapping
from typing import Any

from aiohttp import web
from pydantic import Field, field_validator

from reasonrank.config import Strict
from reasonrank.prompt import SYSTEM_PROMPT, rewrite_brackets
from reasonrank.teacher.misjudgement import TeacherErrors
from reasonrank.teacher.prompts import ANSWER_MARK, PASSAGE_MARK, POINTWISE_SYSTEM_PROMPT, QUERY_MARK
from reasonrank.training.demo_set import verdict_walk

FAULT_KINDS = ("rate_limited", "server_error", "timeout", "malformed")


class SimulationConfig(Strict):
    """The simulated teacher's dials (a test double; see the module docstring)."""

    noise: float = Field(0.1, ge=0.0, le=1.0)
    errors: TeacherErrors = TeacherErrors()  # misjudgements by wording, before `noise` (all rates 0: none)
    latency_s: float = Field(0.0, ge=0.0)
    reasoning_words: int = Field(40, ge=1)
    # True: the reasoning's closing recap names the ids judged irrelevant too (the answer's tail); None (or false):
    # the relevant ids only, as the demo does (docs/measurements-demo.md: measured over sample orders, not kept)
    others_recap: bool | None = None
    inline_reasoning: float = Field(0.5, ge=0.0, le=1.0)  # share answered with <think> in the content
    fault_rate: float = Field(0.0, ge=0.0, le=1.0)  # share of requests that fault, spread over fault_kinds
    fail_first: int = Field(0, ge=0)  # besides: the first N attempts of every prompt fault (kinds in turn)
    fault_kinds: tuple[str, ...] = FAULT_KINDS
    retry_after_s: float = Field(0.2, ge=0.0)  # what a 429 asks the client to wait
    hang_s: float = Field(30.0, gt=0.0)  # how long a "timeout" fault keeps the request open
    seed: int = 0

    @field_validator("others_recap")
    @classmethod
    def _false_is_the_default(cls, value: bool | None) -> bool | None:
        return value or None  # one value for "relevant ids only", so labels made before the key existed resume

    def model_post_init(self, _context: Any) -> None:
        unknown = set(self.fault_kinds) - set(FAULT_KINDS)
        if unknown:
            raise ValueError(f"unknown fault kinds {sorted(unknown)}; choose from {FAULT_KINDS}")


def _normalise(text: str) -> str:
    return " ".join(rewrite_brackets(text).split())


def _words(text: str) -> int:
    return len(text.split())


class SimulatedTeacher:
    """An OpenAI-compatible chat server on 127.0.0.1 answering from `qrels` (a test double for DeepSeek-R1).

    `queries` maps qid → query text and `corpus` docid → passage text: the server reads the prompt back to
    these ids. Use as a context manager, or `start()` / `stop()`; it serves from a thread of its own.
    """

    def __init__(self, queries: Mapping[str, str], corpus: Mapping[str, str],
                 qrels: Mapping[str, Mapping[str, int]], config: SimulationConfig | None = None,
                 port: int = 0):
        self.config = config or SimulationConfig()
        self.qrels = {q: dict(rels) for q, rels in qrels.items()}
        self._qid_by_text = {_normalise(t): q for q, t in queries.items()}
        self._docid_by_text = {_normalise(t): d for d, t in corpus.items()}
        self._port = port
        self._attempts: Counter[str] = Counter()  # prompt digest → requests seen
        self.outcomes: Counter[str] = Counter()  # ok / rate_limited / server_error / timeout / malformed
        self.arrivals: list[tuple[float, str]] = []  # (monotonic time, prompt digest) of every request
        self.in_flight = 0
        self.peak_in_flight = 0  # the most requests it held open at once
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    # ---- lifecycle -----------------------------------------------------------------------------------
    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._port}/v1"

    def start(self) -> "SimulatedTeacher":
        sock = socket.create_server(("127.0.0.1", self._port))
        self._port = sock.getsockname()[1]
        self._loop = asyncio.new_event_loop()
        ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, args=(sock, ready), daemon=True,
                                        name="simulated-teacher")
        self._thread.start()
        if not ready.wait(30):
            raise RuntimeError("the simulated teacher did not start within 30 s")
        return self

    def stop(self) -> None:
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=30)
            self._loop = self._thread = None

    def __enter__(self) -> "SimulatedTeacher":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def _serve(self, sock: socket.socket, ready: threading.Event) -> None:
        loop = self._loop
        asyncio.set_event_loop(loop)
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/v1/chat/completions", self._chat)
        runner = web.AppRunner(app, handle_signals=False, access_log=None, shutdown_timeout=0.2)
        loop.run_until_complete(runner.setup())
        loop.run_until_complete(web.SockSite(runner, sock).start())
        ready.set()
        loop.run_forever()
        for task in asyncio.all_tasks(loop):  # hung "timeout" faults
            task.cancel()
        loop.run_until_complete(runner.cleanup())
        loop.close()

    # ---- HTTP ----------------------------------------------------------------------------------------
    async def _chat(self, request: web.Request) -> web.StreamResponse:
        self.in_flight += 1
        self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
        try:
            return await self._respond(request)
        finally:
            self.in_flight -= 1

    async def _respond(self, request: web.Request) -> web.StreamResponse:
        try:
            body = await request.json()
            messages = body["messages"]
        except (json.JSONDecodeError, KeyError, TypeError):
            return _error(400, "the body must be JSON with a `messages` list")
        digest = _digest(messages)
        attempt = self._attempts[digest]
        self._attempts[digest] += 1
        self.arrivals.append((time.monotonic(), digest))
        fault = self._fault(digest, attempt)
        self.outcomes[fault or "ok"] += 1
        if fault == "rate_limited":
            wait = self.config.retry_after_s
            return _error(429, "rate limit reached (simulated)", headers={
                "Retry-After": str(math.ceil(wait)), "retry-after-ms": str(int(wait * 1000))})
        if fault == "server_error":
            return _error(500, "internal error (simulated)")
        if fault == "timeout":
            await asyncio.sleep(self.config.hang_s)
            return _error(504, "gateway timeout (simulated)")
        if self.config.latency_s:
            await asyncio.sleep(self.config.latency_s)
        try:
            reasoning, answer = self._answer(messages, digest)
        except ValueError as e:
            return _error(400, str(e))
        continued = messages[-1].get("role") == "assistant" and bool(body.get("continue_final_message"))
        if continued:
            reasoning, answer = "", _continuation(messages[-1].get("content") or "", reasoning, answer)
        if fault == "malformed":
            return web.Response(status=200, content_type="application/json",
                                text='{"id": "chatcmpl-sim", "object": "chat.completion", "choices": [{"ind')
        return web.json_response(self._completion(body, messages, digest, reasoning, answer, continued))

    def _fault(self, digest: str, attempt: int) -> str | None:
        cfg = self.config
        if not cfg.fault_kinds:
            return None
        if attempt < cfg.fail_first:
            return cfg.fault_kinds[attempt % len(cfg.fault_kinds)]
        if not cfg.fault_rate:
            return None
        draw = random.Random(f"{cfg.seed}:fault:{digest}:{attempt}").random()
        if draw >= cfg.fault_rate:
            return None
        return cfg.fault_kinds[int(draw / cfg.fault_rate * len(cfg.fault_kinds))]

    def _completion(self, body: dict[str, Any], messages: list[dict[str, str]], digest: str,
                    reasoning: str, answer: str, continued: bool = False) -> dict[str, Any]:
        max_tokens = body.get("max_tokens") or body.get("max_completion_tokens")
        finish = "stop"
        if max_tokens is not None and _words(reasoning) + _words(answer) > max_tokens:
            reasoning, answer, finish = " ".join(reasoning.split()[:max_tokens]), "", "length"
        message: dict[str, Any] = {"role": "assistant"}
        if continued:  # what follows the turn's start, as it is
            message["content"] = answer
        elif random.Random(f"{self.config.seed}:inline:{digest}").random() < self.config.inline_reasoning:
            closing = "</think>" if finish == "stop" else ""
            message["content"] = f"<think>{reasoning}{closing}{answer}"
        else:
            message["content"], message["reasoning_content"] = answer, reasoning
        prompt_tokens = sum(_words(m.get("content") or "") for m in messages)
        completion_tokens = _words(reasoning) + _words(answer)
        return {
            "id": f"chatcmpl-sim-{digest[:12]}", "object": "chat.completion", "created": int(time.time()),
            "model": body.get("model", "simulated-deepseek-r1"),
            "choices": [{"index": 0, "message": message, "finish_reason": finish, "logprobs": None}],
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                      "total_tokens": prompt_tokens + completion_tokens},
        }

    # ---- answers -------------------------------------------------------------------------------------
    def answer(self, messages: list[dict[str, str]]) -> tuple[str, str]:
        """(reasoning, answer) to a teacher prompt: what a request without faults gets before any cut to
        max_tokens, and how its reasoning and answer are put into the message."""
        return self._answer(messages, _digest(messages))

    def _answer(self, messages: list[dict[str, str]], digest: str) -> tuple[str, str]:
        system = next((m["content"] for m in messages if m.get("role") == "system"), "")
        user = next((m["content"] for m in messages if m.get("role") == "user"), "")
        rng = random.Random(f"{self.config.seed}:label:{digest}")
        misjudging = random.Random(f"{self.config.seed}:misjudge:{digest}")  # its own stream: rates 0 change nothing
        if system == POINTWISE_SYSTEM_PROMPT:
            return self._pointwise(user, rng, misjudging)
        if system == SYSTEM_PROMPT:
            return self._listwise(user, rng, misjudging)
        raise ValueError("the simulated teacher answers only the pointwise and listwise teacher prompts")

    def _grade(self, qid: str | None, passage: str) -> int:
        docid = self._docid_by_text.get(_normalise(passage))
        if docid is None:  # a passage cut to a token budget: the corpus text it starts
            start = _normalise(passage)
            docid = next((d for t, d in self._docid_by_text.items() if start and t.startswith(start)), None)
        return self.qrels.get(qid or "", {}).get(docid or "", 0)

    def _pointwise(self, user: str, rng: random.Random, misjudging: random.Random) -> tuple[str, str]:
        found = _POINTWISE.match(user)
        if not found:
            raise ValueError("not a pointwise teacher prompt")
        query, passage = found.group("query"), found.group("passage")
        qid = self._qid_by_text.get(_normalise(query))
        relevant = self.config.errors.judge(query, passage, self._grade(qid, passage), misjudging) > 0
        if rng.random() < self.config.noise:
            relevant = not relevant
        verdict = "clearly addresses what the query needs" if relevant else "does not address the query's need"
        reasoning = _pad(f"The query asks: {_clip(query)}. The passage says: {_clip(passage)}. "
                         f"Comparing the two, the passage {verdict}.", self.config.reasoning_words, rng)
        return reasoning, f"<answer>{'Yes' if relevant else 'No'}</answer>"

    def _listwise(self, user: str, rng: random.Random, misjudging: random.Random) -> tuple[str, str]:
        found = _LISTWISE_SUFFIX.search(user)
        if not found:
            raise ValueError("not a listwise ranking prompt")
        query, n = found.group("query"), int(found.group("n"))
        opening = f"search query: {query}.\n\n"
        body = user[user.index(opening) + len(opening): found.start()]
        pieces = _PASSAGE_ID.split("\n" + body)[1:]
        passages = {int(k): text.strip() for k, text in zip(pieces[0::2], pieces[1::2])}
        if sorted(passages) != list(range(1, n + 1)):
            raise ValueError(f"expected passages [1]..[{n}] in the listwise prompt")
        qid = self._qid_by_text.get(_normalise(query))
        # a teacher's mistakes are misjudged passages: each misjudged by its wording (`errors`), then each verdict
        # flipped with probability `noise`; the reasoning and the ranking follow the (mis)judged grades, and the
        # ranking may swap neighbours besides (`errors.swap`)
        errors = self.config.errors
        grades = {k: errors.judge(query, text, self._grade(qid, text), misjudging) for k, text in passages.items()}
        grades = {k: (0 if g > 0 else 1) if rng.random() < self.config.noise else g for k, g in grades.items()}
        order = errors.swapped(sorted(grades, key=lambda k: -grades[k]), misjudging)  # stable: ties keep prompt order
        # each passage restated, then judged, in the prompt's order, then the ids judged relevant, as a reasoning
        # model walks a list before it ranks it (short and regular, so that a tiny student can learn from it)
        ids = sorted(passages)
        reasoning = _pad(verdict_walk([passages[k] for k in ids], [grades[k] > 0 for k in ids],
                                        bool(self.config.others_recap)),
                         self.config.reasoning_words, rng)
        return reasoning, "<answer>" + " > ".join(f"[{k}]" for k in order) + "</answer>"


_POINTWISE = re.compile(
    rf"^{re.escape(QUERY_MARK)}(?P<query>.*?)\n\n(?:{re.escape(ANSWER_MARK)}.*?\n\n)?"
    rf"{re.escape(PASSAGE_MARK)}(?P<passage>.*)\n\n(?:The reference answer .*?)?Is the passage relevant",
    re.DOTALL)
_LISTWISE_SUFFIX = re.compile(r"\nSearch Query: (?P<query>.*)\.\nRank the (?P<n>\d+) passages above", re.DOTALL)
_PASSAGE_ID = re.compile(r"\n\[(\d+)\] ")
_FILLER = ("Let me weigh this carefully.", "The key concepts must match, not just the words.",
           "Surface overlap alone is not enough.", "I check whether the passage helps reach an answer.")


def _digest(messages: list[dict[str, str]]) -> str:
    return hashlib.sha256(json.dumps(messages, sort_keys=True).encode()).hexdigest()


def _continuation(prefix: str, reasoning: str, answer: str) -> str:
    """What follows `prefix`, the start of the turn a client asks to continue (as vLLM's server does): the
    answer's ranking once the prefix has opened the answer, else the rest of the whole response."""
    if prefix.endswith("<answer>"):
        return answer.removeprefix("<answer>")
    whole = f"<think>{reasoning}</think>{answer}"
    return whole[len(prefix):] if whole.startswith(prefix) else whole


def _clip(text: str, words: int = 12) -> str:
    return " ".join(text.split()[:words])


def _pad(text: str, words: int, rng: random.Random) -> str:
    """`text` with filler sentences appended until it has `words` words (linear in `words`: a long reasoning
    is built once, not re-counted after each sentence)."""
    parts, count = [text], _words(text)
    while count < words:
        filler = rng.choice(_FILLER)
        parts.append(filler)
        count += _words(filler)
    return " ".join(parts)


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
    kind = {400: "invalid_request_error", 429: "rate_limit_exceeded"}.get(status, "server_error")
    return web.json_response({"error": {"message": message, "type": kind, "code": status}}, status=status,
                             headers=headers)

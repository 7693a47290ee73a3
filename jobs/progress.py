"""One progress line per stage: what every job reports its progress through, and the console that shows it.

A job wraps its main loop in a `StageProgress` (what it counts, the total, where its outputs go) and
advances it; each update is an ordinary `logging` record on the `jobs.progress` logger, at most one every
few seconds. Run as a single stage (`reasonrank evaluate …`), those records are INFO lines among the job's
other log lines, on stderr. Under `console_to_log(path)` (what `reasonrank demo` runs in), the console
shows ONLY the progress lines — one per stage, rewritten in place on a terminal — and what is said to it on
purpose (`say`: the result tables); everything else (the jobs' own log lines, Ray, Ray Data, vLLM,
transformers, DeepSpeed, tqdm bars, the Ray workers' output Ray forwards to the driver, C-level writes)
goes to the log file, because the process's stdout and stderr themselves point there.

Work done in other processes (Ray Train workers) reaches the driver's line through `ProgressRelay`.
"""
from __future__ import annotations

import contextlib
import contextvars
import logging
import os
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any, TextIO

LOGGER = "jobs.progress"
log = logging.getLogger(LOGGER)

_STAGE: contextvars.ContextVar[str | None] = contextvars.ContextVar("progress_stage", default=None)
_interval_s = 30.0  # between two updates of one stage's line: sparse in plain logs, frequent on a live console


def _fmt_duration(seconds: float) -> str:
    seconds = int(round(max(seconds, 0)))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


@contextlib.contextmanager
def stage(label: str) -> Iterator[None]:
    """Name the stage a pipeline runs next (`[2/6] sft`): the job's own progress line takes this name."""
    token = _STAGE.set(label)
    try:
        yield
    finally:
        _STAGE.reset(token)


def say(text: str) -> None:
    """Show `text` on the console as it is (a result table), and keep it in the log."""
    log.info(text, extra={"console": True})


class StageProgress:
    """A stage's progress: `done` of `total` `unit`, time spent, time left, and where the outputs go.

    The time left is the rate since the first advance (start-up time not counted) applied to what is left;
    until a second advance there is no rate yet ("estimating").
    `note` replaces the count in the line for phases that are not counted (start-up, an evaluation pass).
    """

    def __init__(self, name: str, total: int, unit: str, outputs: str, done: int = 0):
        self.name = _STAGE.get() or name
        self.total, self.unit, self.outputs = max(int(total), 0), unit, outputs
        self.done = self._first_done = int(done)
        self.started = time.monotonic()
        self._first_at: float | None = None
        self._last_emit = float("-inf")
        self.note: str | None = None
        self.finished = False
        self._lock = threading.Lock()
        self._emit(force=True)

    def __enter__(self) -> "StageProgress":
        return self

    def __exit__(self, exc_type: Any, *_: Any) -> None:
        if not self.finished:
            self.finish("failed" if exc_type is not None else None)

    def set_total(self, total: int, done: int | None = None) -> None:
        """The total, once known (and what a resumed stage had done before it started)."""
        with self._lock:
            self.total = max(int(total), 0)
            if done is not None and self._first_at is None:
                self.done = self._first_done = int(done)

    def advance(self, n: int = 1, note: str | None = None) -> None:
        self.update_to(self.done + n, note)

    def update_to(self, done: int, note: str | None = None) -> None:
        with self._lock:
            if self._first_at is None and done > self.done:  # the rate is measured from the first advance on
                self._first_at, self._first_done = time.monotonic(), done
            self.done, self.note = done, note
            self._emit()

    def status(self, note: str | None) -> None:
        """Say what the stage is doing while nothing is counted (shown at once)."""
        with self._lock:
            self.note = note
            self._emit(force=True)

    def finish(self, result: str | None = None) -> None:
        with self._lock:
            self.finished, self.note = True, result
            self._emit(force=True)

    def left_s(self) -> float | None:
        if self.total and self.done >= self.total:
            return 0.0
        if self._first_at is None or self.done <= self._first_done:
            return None
        rate = (self.done - self._first_done) / max(time.monotonic() - self._first_at, 1e-9)
        return (self.total - self.done) / rate

    def line(self) -> str:
        elapsed = time.monotonic() - self.started
        count = f"{self.done}/{self.total} {self.unit} ({100 * self.done / self.total:.0f}%)" if self.total else ""
        if self.finished:
            timing = f"{self.note or 'done'} in {_fmt_duration(elapsed)}"
        else:
            left = self.left_s()
            timing = f"{_fmt_duration(elapsed)} elapsed, " + (f"~{_fmt_duration(left)} left" if left is not None
                                                               else "time left: estimating")
            if self.note:
                count = f"{count}, {self.note}" if count else self.note
        return f"{self.name:<20} {count:<34} {timing:<32} → {self.outputs}"

    def _emit(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last_emit < _interval_s and self.done < self.total:
            return
        self._last_emit = now
        log.info(self.line(), extra={"stage": self.name, "final": self.finished})


class ProgressRelay:
    """Progress made in other processes (Ray workers): they call `report(done)` on the relay's actor handle;
    a thread here polls it once a second and moves `progress` to it."""

    def __init__(self, progress: StageProgress, poll_s: float = 1.0):
        import ray

        @ray.remote(num_cpus=0)
        class _Latest:
            def __init__(self) -> None:
                self.done = 0

            def report(self, done: int) -> None:
                self.done = max(self.done, done)

            def latest(self) -> int:
                return self.done

        self.progress, self.poll_s = progress, poll_s
        self.handle = _Latest.remote()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, name="progress-relay", daemon=True)

    def __enter__(self) -> Any:
        self._thread.start()
        return self.handle

    def __exit__(self, *_: Any) -> None:
        import ray

        self._stop.set()
        self._thread.join()
        with contextlib.suppress(Exception):
            self.progress.update_to(ray.get(self.handle.latest.remote(), timeout=5))
        ray.kill(self.handle)

    def _poll(self) -> None:
        import ray

        while not self._stop.wait(self.poll_s):
            with contextlib.suppress(Exception):
                done = ray.get(self.handle.latest.remote(), timeout=5)
                if done != self.progress.done:
                    self.progress.update_to(done)


# --- the console -------------------------------------------------------------------------------------------

class ConsoleHandler(logging.Handler):
    """Shows progress records as one line per stage and `say` records as they are; on a terminal the current
    stage's line is rewritten in place, elsewhere each update is a new line. Errors are shown too."""

    def __init__(self, stream: TextIO, interactive: bool | None = None):
        super().__init__(logging.INFO)
        self.stream = stream
        self.interactive = stream.isatty() if interactive is None else interactive
        self._live: str | None = None  # the stage whose line is on screen, not yet ended by a newline

    def emit(self, record: logging.LogRecord) -> None:
        stage = getattr(record, "stage", None)
        if stage is None and not getattr(record, "console", False) and record.levelno < logging.ERROR:
            return
        try:
            # an error's traceback goes to the log file only: its message line is enough here
            text = record.getMessage() if record.name == LOGGER else f"{record.levelname} {record.name}: " \
                f"{record.getMessage()}"
            if stage is not None and self.interactive:
                if self._live is not None and self._live != stage:
                    self.stream.write("\n")  # another stage's line stays as it last was
                self.stream.write("\r\x1b[K" + text)
                self._live = None if getattr(record, "final", False) else stage
                if self._live is None:
                    self.stream.write("\n")
            else:
                if self._live is not None:
                    self.stream.write("\n")
                    self._live = None
                self.stream.write(text + "\n")
            self.stream.flush()
        except Exception:  # noqa: BLE001 - a console that cannot be written must not stop the job
            self.handleError(record)


@contextlib.contextmanager
def console_to_log(path: str, console: TextIO | None = None) -> Iterator[TextIO]:
    """Everything the process writes to stdout and stderr goes to the log file at `path`, the jobs' log
    records too; the console (the original stderr, or `console`) shows progress lines and `say` only.

    Redirects the file descriptors 1 and 2 themselves, so Ray's forwarding of its workers' output, C-level
    writes and child processes land in the log as well; restored on exit.
    """
    global _interval_s
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    saved = {fd: os.dup(fd) for fd in (1, 2)}
    screen = console or os.fdopen(os.dup(2), "w", buffering=1, encoding="utf-8", errors="replace")
    log_fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    root = logging.getLogger()
    before = (root.handlers[:], root.level, _interval_s)
    handler = ConsoleHandler(screen)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    file_handler = logging.FileHandler(path, encoding="utf-8")
    file_handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    try:
        for fd in (1, 2):
            os.dup2(log_fd, fd)
        root.handlers = [file_handler, handler]
        root.setLevel(logging.INFO)
        _interval_s = 2.0 if handler.interactive else 60.0
        yield screen
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        root.handlers, level, _interval_s = before[0], before[1], before[2]
        root.setLevel(level)
        file_handler.close()
        for fd, copy in saved.items():
            os.dup2(copy, fd)
            os.close(copy)
        os.close(log_fd)
        if console is None:
            screen.close()

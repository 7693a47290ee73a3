"""The console of a pipeline run: one progress line per stage (its count, time left, where its outputs go) and
the tables said to it; the jobs' own log lines and the libraries' chatter — Python loggers, prints, C-level
writes, child processes, the output of Ray workers that Ray forwards to the driver — land in the log file."""
from __future__ import annotations

import io
import logging
import os
import pty
import re
import select
import subprocess
import sys
import time
from pathlib import Path

import pytest

from jobs import progress as progress_mod
from jobs.progress import ConsoleHandler, StageProgress, say, stage

REPO = Path(__file__).resolve().parent.parent


def screen(raw: str) -> list[str]:
    """What a terminal shows after `raw`: a carriage return goes back to the line's start, ESC[K clears it."""
    lines = []
    for line in raw.replace("\r\n", "\n").split("\n"):
        line = re.sub(r"\x1b\[K", "", line.split("\r")[-1])
        lines.append(line)
    while lines and not lines[-1]:
        lines.pop()
    return lines


@pytest.fixture
def console(monkeypatch):
    """A live (terminal-like) console on the root logger, every update shown."""
    stream = io.StringIO()
    handler = ConsoleHandler(stream, interactive=True)
    root = logging.getLogger()
    monkeypatch.setattr(root, "handlers", [handler])
    monkeypatch.setattr(progress_mod, "_interval_s", 0.0)
    # setLevel, not the attribute: it also clears the loggers' cached "is INFO enabled" answers, which a progress
    # line logged earlier in this process while the root was at WARNING would have left at "no"
    level = root.level
    root.setLevel(logging.INFO)
    yield stream
    root.setLevel(level)


def test_each_stage_keeps_one_line_with_its_count_time_left_and_outputs(console):
    with stage("[1/2] label"):
        with StageProgress("synthesize", 40, "labels", "out/synthesize") as labels:
            for _ in range(4):
                labels.advance(10)
                time.sleep(0.01)
    logging.getLogger("ray.data").info("Execution plan of Dataset …")  # a library's chatter: not shown
    logging.getLogger("jobs.sft").info("step 3/8 loss 2.1")  # a job's own log line: not shown either
    with StageProgress("sft", 8, "steps", "out/sft") as steps:
        steps.status("starting the workers")
        steps.advance(3)
        time.sleep(0.01)
        steps.advance(1)
        live = screen(console.getvalue())
        assert len(live) == 2 and live[1].startswith("sft ") and "4/8 steps (50%)" in live[1]
        assert re.search(r"~\d+:\d\d left", live[1]) and live[1].endswith("→ out/sft")
        steps.advance(4)
    say("| model | ndcg@10 |")
    shown = screen(console.getvalue())
    assert len(shown) == 3, shown
    assert shown[0].startswith("[1/2] label ") and "40/40 labels (100%)" in shown[0] and "done in" in shown[0]
    assert shown[0].endswith("→ out/synthesize")
    assert "8/8 steps (100%)" in shown[1] and "done in" in shown[1] and shown[1].endswith("→ out/sft")
    assert shown[2] == "| model | ndcg@10 |"
    assert "Execution plan" not in console.getvalue() and "loss 2.1" not in console.getvalue()


def test_a_stage_that_fails_says_so(console):
    with pytest.raises(RuntimeError), StageProgress("grpo", 10, "responses", "out/grpo") as p:
        p.advance(2)
        raise RuntimeError("boom")
    assert "failed in" in screen(console.getvalue())[-1]


def test_time_left_counts_from_the_first_advance_not_the_start_up():
    p = StageProgress("x", 100, "items", "out", done=50)  # resumed with half done
    assert p.left_s() is None
    p._first_at, p._first_done = time.monotonic() - 10, 50  # 10 s after the first advance …
    p.done = 60  # … 10 more items: 1 item/s, 40 to go
    assert p.left_s() == pytest.approx(40, rel=0.05)


_SCRIPT = r'''
import logging, os, subprocess, sys, time
import ray
from jobs import progress
from jobs.progress import StageProgress, console_to_log, say, stage

log_file = sys.argv[1]
logging.basicConfig(level=logging.INFO)  # as the command line sets it up before the demo starts
with console_to_log(log_file):
    progress._interval_s = 0.0
    ray.init(num_cpus=1, include_dashboard=False)

    @ray.remote
    def chatty():
        print("RAY-WORKER-PRINT")
        print("RAY-WORKER-STDERR", file=sys.stderr)
        return 1

    with stage("[1/2] one"), StageProgress("one", 2, "parts", "out/one") as p:
        ray.get(chatty.remote())
        p.advance(1)
        logging.getLogger("vllm").warning("VLLM-LOGGER-CHATTER")
        logging.getLogger("jobs.evaluate").info("JOB-LOG-LINE")
        print("STDOUT-PRINT")
        print("STDERR-PRINT", file=sys.stderr)
        os.write(2, b"FD2-WRITE\n")
        subprocess.run([sys.executable, "-c",
                        "import sys; print('CHILD-STDOUT'); print('CHILD-STDERR', file=sys.stderr)"])
        for _ in range(100):  # Ray forwards the workers' output a moment later
            text = open(log_file).read()
            if "RAY-WORKER-PRINT" in text and "RAY-WORKER-STDERR" in text:
                break
            time.sleep(0.1)
        p.advance(1)
    with stage("[2/2] two"), StageProgress("two", 3, "steps", "out/two") as p:
        p.advance(3)
    say("RESULT-TABLE")
    ray.shutdown()
print("AFTER-RESTORE")
'''

CHATTER = ("RAY-WORKER-PRINT", "RAY-WORKER-STDERR", "VLLM-LOGGER-CHATTER", "JOB-LOG-LINE", "STDOUT-PRINT",
           "STDERR-PRINT", "FD2-WRITE", "CHILD-STDOUT", "CHILD-STDERR")


def test_console_shows_stage_lines_while_all_chatter_lands_in_the_log_file(tmp_path):
    log_file = tmp_path / "logs" / "demo.log"
    master, slave = pty.openpty()  # stderr is a terminal, as under `make demo`
    env = {**os.environ, "RAY_DEDUP_LOGS": "0"}
    proc = subprocess.Popen([sys.executable, "-c", _SCRIPT, str(log_file)], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=slave, stdin=subprocess.DEVNULL)
    os.close(slave)
    raw = b""
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        ready, _, _ = select.select([master], [], [], 0.5)
        if ready:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # the child closed its end
                break
            if not chunk:
                break
            raw += chunk
        elif proc.poll() is not None:
            break
    os.close(master)
    stdout = proc.communicate(timeout=60)[0].decode()
    terminal = raw.decode(errors="replace")
    assert proc.returncode == 0, (terminal[-3000:], log_file.read_text()[-3000:] if log_file.exists() else "")

    shown = screen(terminal)
    assert [line.split()[0:2] for line in shown] == [["[1/2]", "one"], ["[2/2]", "two"], ["RESULT-TABLE"]], shown
    assert "2/2 parts (100%)" in shown[0] and shown[0].endswith("→ out/one")
    assert "3/3 steps (100%)" in shown[1] and shown[1].endswith("→ out/two")
    assert stdout.strip() == "AFTER-RESTORE"  # stdout is the process's own again once the run is over
    logged = log_file.read_text()
    for text in CHATTER:
        assert text not in terminal, text
        assert text in logged, text
    assert "Started a local Ray instance" in logged or "ray" in logged.lower()
    assert "[2/2] two" in logged and "RESULT-TABLE" in logged  # the log has the whole story

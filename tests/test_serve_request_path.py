"""One Cohere request's path through the project (the HTTP ingress, the failover call, the model replica,
the reranker, down to the engine and back) is one-way: no file is re-entered from below itself
(A → B → A), measured by tracing a real request to a replica on a scripted OpenAI-compatible model
(`bench/trace_request.py`, which prints the whole path)."""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))

from trace_request import trace_one_request  # noqa: E402


def test_a_cohere_request_enters_no_file_twice():
    trace, results = trace_one_request(documents=8)
    assert trace.reentries == []
    # grades (7i mod 4): 1 and 5 are 3, 2 and 6 are 2; a sliding window of 4 (step 2) over 8 ranks 1, 5, 2 first
    assert [r["index"] for r in results] == [1, 5, 2]
    files = list(trace.functions)
    assert files[0] == "serve/app.py" and files[-1] == "serve/responses.py"
    order = [files.index(f) for f in ("serve/failover.py", "serve/model_replica.py", "reasonrank/reranker.py",
                                      "reasonrank/strategies/driver.py", "reasonrank/strategies/engine_windows.py",
                                      "serve/engine_health.py", "reasonrank/engines/openai_engine.py",
                                      "reasonrank/parsing.py")]
    assert order[0] < order[1] < order[2] < order[3] < order[4] < order[6] < order[7] and order[5] < order[6]
    assert len(files) == 24, files

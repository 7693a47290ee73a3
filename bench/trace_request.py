"""The files and functions one Cohere `/v2/rerank` request passes through, and whether any file is re-entered.

    PYTHONPATH=. python bench/trace_request.py [--documents 8]

The ingress and a model replica are built in this process (the deployments' own classes, without Ray Serve
around them), the ingress calling the replica through a stand-in for its Serve handle; the replica's engine
is the OpenAI-compatible backend, whose model is a scripted server on 127.0.0.1 (the simulated teacher with
no noise). After one request to warm it up, a second goes through the `/v2/rerank` handler under
`sys.setprofile`, which sees every function of the project (`serve/`, `reasonrank/`) it enters, in order.

A file is re-entered when one of its functions runs while a function of another project file, called (however
indirectly) from that file, is still running: A → B → A. The callers are the Python stack, and a task's stack
goes on at the place that created the task (`asyncio.ensure_future` in the driver, `wait_for` in the
handler), so a call back through a task counts as well. Prints the files in the order first entered with the
functions entered in each, the count, and the re-entries.
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
from pathlib import Path
from types import FrameType

REPO = Path(__file__).resolve().parent.parent
PROJECT = (str(REPO / "serve") + "/", str(REPO / "reasonrank") + "/")


def project_file(frame: FrameType | None) -> str | None:
    if frame is None:
        return None
    path = frame.f_code.co_filename
    return str(Path(path).relative_to(REPO)) if path.startswith(PROJECT) else None


class RequestTrace:
    """Project functions entered in order, and each file entered again from below itself."""

    def __init__(self):
        self.functions: dict[str, list[str]] = {}  # file → functions, in order of first entry
        self.reentries: list[str] = []
        self.creators: dict[int, list[str]] = {}  # id(task) → project files on the stack that created it

    def callers(self, frame: FrameType | None) -> list[str]:
        """Project files of the frames below `frame`, nearest first, continued through the task's creator."""
        files = []
        while frame is not None:
            file = project_file(frame)
            if file is not None and (not files or files[-1] != file):
                files.append(file)
            frame = frame.f_back
        try:
            task = asyncio.current_task()
        except RuntimeError:
            task = None
        return files + self.creators.get(id(task), []) if task is not None else files

    def task_factory(self, loop, coro, **options):
        task = asyncio.Task(coro, loop=loop, **options)
        self.creators[id(task)] = self.callers(sys._getframe(1))
        return task

    def profile(self, frame: FrameType, event: str, _arg) -> None:
        if event != "call":
            return
        file = project_file(frame)
        if file is None:
            return
        name = frame.f_code.co_qualname
        seen = self.functions.setdefault(file, [])
        if name not in seen:
            seen.append(name)
        below = self.callers(frame.f_back)
        while below and below[0] == file:  # calls within the file
            below.pop(0)
        if file in below:
            self.reentries.append(f"{file}:{name} from {' <- '.join(below[:below.index(file) + 1])}")

    def report(self) -> str:
        lines = [f"{i:2d}. {file}: {', '.join(names)}" for i, (file, names) in enumerate(self.functions.items(), 1)]
        reentered = sorted({r.split(":", 1)[0] for r in self.reentries})
        lines.append(f"{len(self.functions)} files; re-entered: {', '.join(reentered) if reentered else 'none'}")
        lines += [f"    {r}" for r in dict.fromkeys(self.reentries)]
        return "\n".join(lines)


def own_class(deployment):
    """A deployment's own class (under Serve's ingress wrapper, where it has one)."""
    from ray.serve._private.http_util import ASGIAppReplicaWrapper

    cls = deployment.func_or_class
    return cls.__mro__[1] if issubclass(cls, ASGIAppReplicaWrapper) else cls


def build(deployment, *args):
    cls = own_class(deployment)
    instance = cls.__new__(cls)
    cls.__init__(instance, *args)
    return instance


class InProcessHandle:
    """Stands in for the ingress's Serve handle to the model deployment: the calls `serve.failover` makes
    (`options`, `choose_replica`, `dispatch`), answered by one replica object in this process."""

    def __init__(self, replica, method: str | None = None):
        self.replica, self.method = replica, method

    def options(self, method_name: str) -> "InProcessHandle":
        return InProcessHandle(self.replica, method_name)

    @contextlib.asynccontextmanager
    async def choose_replica(self):
        yield self.replica

    def dispatch(self, selection, *args):
        return getattr(selection, self.method)(*args)


def cohere_request(body: dict):
    from starlette.requests import Request

    raw = json.dumps(body).encode()

    async def receive():
        return {"type": "http.request", "body": raw, "more_body": False}

    scope = {"type": "http", "method": "POST", "path": "/v2/rerank", "query_string": b"",
             "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(raw)).encode())]}
    return Request(scope, receive)


def trace_one_request(documents: int = 8) -> tuple[RequestTrace, list[dict]]:
    """The trace of the second of two `/v2/rerank` requests to a replica built here, and its results."""
    from reasonrank.teacher.simulated import SimulatedTeacher, SimulationConfig

    query = "why do cats purr"
    docs = [f"passage {i}: cats purr when content; fact number {i}." for i in range(documents)]
    grades = {str(i): (i * 7) % 4 for i in range(documents)}
    teacher = SimulatedTeacher({"q": query}, {str(i): t for i, t in enumerate(docs)}, {"q": grades},
                               SimulationConfig(noise=0.0, reasoning_words=4))
    from serve.app import RerankIngress, RerankerDeployment

    trace = RequestTrace()
    with teacher:
        config = {
            "model_name": "scripted",
            "engine": {"backend": "openai", "model": "scripted", "base_url": teacher.base_url, "max_retries": 0},
            "sampling": {"max_new_tokens": 256},
            "strategy": {"name": "sliding_window", "window_size": 4, "step": 2, "depth": documents}}
        model = build(RerankerDeployment, config)
        replica = build(RerankIngress, config, InProcessHandle(model))
        body = {"model": "m", "query": query, "documents": docs, "top_n": 3}

        async def two_requests() -> list[dict]:
            asyncio.get_running_loop().set_task_factory(trace.task_factory)
            try:
                warm = await replica.cohere_v2(cohere_request(body))
                assert warm.status_code == 200, warm.body
                sys.setprofile(trace.profile)
                try:
                    answer = await replica.cohere_v2(cohere_request(body))
                finally:
                    sys.setprofile(None)
                assert answer.status_code == 200, answer.body
                return json.loads(answer.body)["results"]
            finally:
                await model.reranker.aclose()

        results = asyncio.run(two_requests())
    return trace, results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--documents", type=int, default=8)
    args = parser.parse_args()
    trace, results = trace_one_request(args.documents)
    print(f"POST /v2/rerank, {args.documents} documents: 200 {results}")
    print(trace.report())


if __name__ == "__main__":
    main()

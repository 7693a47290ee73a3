"""Watching the model deployment's replicas from outside: how many Serve runs, and which one answered a request.

`replica_states` reads Serve's own account (`serve.status()`): replicas starting, running, stopping. That a
replica runs does not say that it serves; `ReplicaLog` does, from the access log Serve writes per replica:
every line a replica logs while handling a request carries the request's id, the `x-request-id` an HTTP
client may send (or the one Serve gives it and returns in the same header), and the name of the replica's
log file carries the replica's id. Read where Serve writes its logs: on the node that runs the replicas
(a single-node cluster, or a laptop).
"""
from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

MODEL_DEPLOYMENT = "Reranker"  # the Serve name of the deployment that hosts the model


def replica_states(app: str, deployment: str = MODEL_DEPLOYMENT) -> Counter[str]:
    """Replicas of `deployment` in `app` by state ("STARTING", "RUNNING", "STOPPING", …); empty before the
    application has the deployment."""
    from ray import serve

    application = serve.status().applications.get(app)
    status = application.deployments.get(deployment) if application is not None else None
    return Counter({str(getattr(state, "value", state)): count
                    for state, count in (status.replica_states if status is not None else {}).items()})


class ReplicaLog:
    """Which replica of `deployment` handled each request id, read incrementally from Serve's replica logs."""

    def __init__(self, app: str, deployment: str = MODEL_DEPLOYMENT, logs_dir: str | Path | None = None):
        if logs_dir is None:
            from ray.serve._private.logging_utils import get_serve_logs_dir

            logs_dir = get_serve_logs_dir()
        self.logs_dir = Path(logs_dir)
        self.file_prefix = f"replica_{app}_{deployment}_"
        # "INFO 2026-01-01 10:00:00,000 <app>_<deployment> <replica id> <request id> -- <message>"
        self.line = re.compile(rf"^[A-Z]+ \S+ \S+ {re.escape(f'{app}_{deployment}')} (?P<replica>\S+) "
                               r"(?P<request>(?!--)\S+) -- ")
        self.offsets: dict[Path, int] = {}
        self.replica_of: dict[str, str] = {}  # request id → replica id

    def read(self) -> dict[str, str]:
        """Reads what the replicas logged since the last call; returns request id → replica id, all seen so far."""
        for path in sorted(self.logs_dir.glob(f"{self.file_prefix}*.log")):
            with path.open("rb") as f:
                f.seek(self.offsets.get(path, 0))
                chunk = f.read()
            complete = chunk.rfind(b"\n") + 1  # a line still being written is read next time
            self.offsets[path] = self.offsets.get(path, 0) + complete
            for line in chunk[:complete].decode("utf-8", "replace").splitlines():
                match = self.line.match(line)
                if match:
                    self.replica_of.setdefault(match["request"], match["replica"])
        return dict(self.replica_of)

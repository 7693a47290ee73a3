"""Drain this pod's own Ray node before Kubernetes stops it: the preStop hook of the serving GPU pods.

    python -m cluster.drain_node --deadline-s 20

Tells Ray's GCS that the node goes away in `deadline_s` seconds, for the reason a spot notice is
(DRAIN_NODE_REASON_PREEMPTION; what `ray drain-node` sends). Ray schedules nothing new on a draining node,
and Serve's controller migrates the replicas on it: it starts replacements elsewhere, then stops the old ones
gracefully, taking them out of every router first (no new request reaches them) and letting the calls they
hold finish (up to `graceful_shutdown_timeout_s`); at the deadline it stops them anyway, and the ingress sends
what they still held to another replica (serve/failover.py). The hook waits until no Serve replica is left
alive on this node, or the deadline, then returns; Kubernetes then sends the container SIGTERM.
"""
from __future__ import annotations

import argparse
import logging
import time

log = logging.getLogger(__name__)


def drain(gcs_address: str, node_id: str, deadline_s: float, message: str) -> None:
    """Ask the GCS at `gcs_address` to drain node `node_id` (hex), which goes away in `deadline_s`."""
    from ray._raylet import GcsClient
    from ray.core.generated import autoscaler_pb2

    deadline_ms = int((time.time() + deadline_s) * 1000)
    accepted, why = GcsClient(address=gcs_address).drain_node(
        node_id, autoscaler_pb2.DrainNodeReason.Value("DRAIN_NODE_REASON_PREEMPTION"), message, deadline_ms)
    if not accepted:
        raise RuntimeError(f"the GCS refused to drain node {node_id}: {why}")


def serve_replicas_on(node_id: str) -> list[str]:
    """The Serve replicas on node `node_id`, of every application, as Serve's controller reports them."""
    from ray.serve.context import _get_global_client

    client = _get_global_client(raise_if_no_controller_running=False)
    if client is None:
        return []
    details = client.get_serve_details()
    return [replica["replica_id"] for app in details.get("applications", {}).values()
            for deployment in app["deployments"].values() for replica in deployment["replicas"]
            if replica.get("node_id") == node_id]


def drain_and_wait(gcs_address: str, node_id: str, deadline_s: float, message: str, poll_s: float = 1.0) -> bool:
    """Drain the node and wait for its Serve replicas to stop; False if some were still there at the deadline."""
    ends = time.monotonic() + deadline_s
    drain(gcs_address, node_id, deadline_s, message)
    while (left := serve_replicas_on(node_id)) and time.monotonic() < ends:
        time.sleep(poll_s)
    if left:
        log.warning("node %s: %d Serve replicas still alive at the drain deadline", node_id, len(left))
    return not left


def main(argv: list[str] | None = None) -> int:
    import ray

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--deadline-s", type=float, required=True,
                        help="seconds until the node goes (below the pod's terminationGracePeriodSeconds)")
    parser.add_argument("--message", default="pod stopping (preStop hook): preempted, evicted or scaled down")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    ray.init(address="auto", logging_level=logging.WARNING)
    context = ray.get_runtime_context()
    node_id, gcs_address = context.get_node_id(), context.gcs_address
    started = time.monotonic()
    done = drain_and_wait(gcs_address, node_id, args.deadline_s, args.message)
    log.info("node %s drained in %.1f s%s", node_id, time.monotonic() - started, "" if done else " (deadline)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

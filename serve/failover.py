"""Calls from the HTTP ingress to the model replicas: sent again to another replica when the one holding a
call dies, within the request's own deadline; a 503 with Retry-After when no replica takes it in time.

Why an ingress in front of the model replicas, and not the model deployment serving HTTP itself: Serve's
HTTP proxy does not resend a request whose replica died (the client got a 500), and it cannot, since only
the application knows that a rerank is idempotent. A light ingress deployment (no model, a fraction of a CPU,
on CPU nodes that are not preempted) holds the HTTP request while a model replica computes, so the death of
a model replica (a SIGKILL, an OOM, a spot node gone) is an exception here, not a lost connection. A
rerank has no side effects, so sending it again gives the same answer (greedy decoding, seeded windows).

Each attempt first has a replica take the call (`DeploymentHandle.choose_replica`: Serve's router picks one
and reserves a slot on it), then sends it there (`dispatch`). That split tells the two waits apart: waiting
for a replica to take it is bounded by `ingress.replica_wait_s`, after which the answer is a 503 naming the
cause; once a replica holds it, only the request's deadline bounds it (504). A replica that dies under a
call raises `ray.exceptions.ActorDiedError` (or `ActorUnavailableError` while its death is not yet known;
both `RayActorError`), or `ReplicaUnavailableError` when it left between choice and dispatch. What the model
raised itself arrives as a `RayTaskError` and is raised here as the model raised it.
"""
from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from ray.exceptions import ActorDiedError, RayActorError, RayTaskError
from ray.serve.exceptions import ReplicaUnavailableError

from serve.errors import ServeError

logger = logging.getLogger("ray.serve")

REPLICA_LOST = (RayActorError, ReplicaUnavailableError)


def lost_cause(error: BaseException) -> str:
    """The metrics' name for how a replica was lost under a call."""
    if isinstance(error, ActorDiedError):
        return "replica_died"
    if isinstance(error, RayActorError):
        return "replica_unavailable"
    return "replica_left"


class ModelReplicas:
    """The model deployment behind a handle, called with failover. `on_retry(cause)` hears each resend."""

    def __init__(self, handle: Any, replica_wait_s: float, retry_after_s: int,
                 on_retry: Callable[[str], None] = lambda cause: None):
        self.handle, self.replica_wait_s, self.retry_after_s = handle, replica_wait_s, retry_after_s
        self.on_retry = on_retry

    async def call(self, method: str, *args: Any, deadline_s: float) -> Any:
        """`method(*args)` on a model replica, on another one whenever the replica holding it is lost.

        Raises `TimeoutError` when the deadline passes while a replica holds the call, and a 503
        `ServeError` when no replica takes it within `replica_wait_s` (or, after a replica was lost under
        it, before the deadline)."""
        loop = asyncio.get_running_loop()
        deadline_at = loop.time() + deadline_s
        handle = self.handle.options(method_name=method)
        lost: list[str] = []
        while True:
            remaining = deadline_at - loop.time()
            waited_for_deadline = remaining <= self.replica_wait_s
            taken = False
            try:
                async with asyncio.timeout(min(self.replica_wait_s, max(remaining, 0))) as timer:
                    async with handle.choose_replica() as selection:
                        taken = True
                        timer.reschedule(deadline_at)
                        response = handle.dispatch(selection, *args)
                        try:
                            return await response
                        except asyncio.CancelledError:  # the deadline, or the client went away
                            response.cancel()
                            raise
            except TimeoutError:
                if taken or (waited_for_deadline and not lost):
                    raise
                raise self._unavailable(lost, deadline_s if waited_for_deadline else None) from None
            except REPLICA_LOST as error:
                cause = lost_cause(error)
                lost.append(cause)
                self.on_retry(cause)
                logger.warning("a model replica was lost under a %s call (%s); sending it to another (attempt %d)",
                               method, cause, len(lost) + 1)
            except RayTaskError as error:  # the model's own exception, as it raised it
                raise error.cause from None

    def _unavailable(self, lost: list[str], deadline_s: float | None) -> ServeError:
        why = (f"the model replica holding it was lost ({', '.join(lost)}) and no other took it"
               if lost else "no model replica took it")
        within = (f"within the request deadline of {deadline_s:g} s" if deadline_s is not None
                  else f"within {self.replica_wait_s:g} s (ingress.replica_wait_s)")
        return ServeError(503, f"no live model replica: {why} {within}; replicas are starting or all busy, "
                               f"retry after {self.retry_after_s} s",
                          headers={"Retry-After": str(self.retry_after_s)}, cause="no_live_replica")

"""Autoscaling seen: on a real local Ray Serve, sustained load brings a second model replica that serves, and
when the load falls away the replica goes, every request answered with the right ranking throughout.

The replicas' engine is the OpenAI-compatible backend pointed at the scripted model server on 127.0.0.1
(tests/scripted_model.py, a test double for a model server): each window is answered after a fixed delay, so a
replica is cheap to start and every request's ranking is known (and is not the documents' order). Replicas
are counted by Serve (`serve.status()`) and, to see the second one serve, by which replica handled each
request (Serve's per-replica logs, `tests/replica_log.py`). The autoscaling keys are the config's own
(`deployment.autoscaling`), set to react in seconds instead of production's minutes.
"""
from __future__ import annotations

import time
from collections import Counter

import pytest
from pydantic import ValidationError
from ray.serve.config import AutoscalingConfig

from serve.config import Autoscaling, ServeConfig
from tests.replica_log import ReplicaLog, replica_states
from tests.rerank_load import RerankLoad
from tests.scripted_model import DOCS, QUERY, expected_order, scripted_model, scripted_serve_config
from tests.serving import serving

# Ray marks metrics_interval_s deprecated (warning each time it reads a non-default value) and still reads it.
pytestmark = pytest.mark.filterwarnings("ignore:The `metrics_interval_s` field:DeprecationWarning")

APP = "reranker-autoscaled"
WINDOW_LATENCY_S = 0.25  # the scripted model's time per window: a request (three windows) takes about 0.8 s
TARGET = 2  # requests per replica
LOAD_CLIENTS = 6  # three replicas' worth of requests in flight: more than one replica's target, capped at two
FAST = {"min_replicas": 1, "max_replicas": 2, "target_ongoing_requests": TARGET, "upscale_delay_s": 1,
        "downscale_delay_s": 3, "metrics_interval_s": 0.5, "look_back_period_s": 2}
PHASE_LIMIT_S = 45  # each of scale-up and scale-down; on this machine either takes about 10 s
AFTER_SCALE_DOWN = 3  # requests answered after the scale-down, all by the replica left


def test_autoscaling_keys_reach_ray_with_the_values_set():
    options = Autoscaling.model_validate({**FAST, "initial_replicas": 2, "upscaling_factor": 0.5}).serve_options()
    ray_config = AutoscalingConfig(**options)
    assert ray_config.look_back_period_s == 2 and ray_config.metrics_interval_s == 0.5
    assert ray_config.initial_replicas == 2 and ray_config.get_upscaling_factor() == 0.5
    assert ray_config.upscale_delay_s == 1 and ray_config.downscale_delay_s == 3
    assert "downscaling_factor" not in options  # left to Ray's default


@pytest.mark.parametrize("keys,words", [
    ({"metrics_interval_s": 5, "look_back_period_s": 5}, ["look_back_period_s (5)", "metrics_interval_s (5)"]),
    ({"min_replicas": 1, "max_replicas": 3, "initial_replicas": 4}, ["initial_replicas (4)", "[1, 3]"]),
    ({"upscaling_factor": 0}, ["upscaling_factor"]),
])
def test_autoscaling_keys_out_of_bounds_are_refused_by_name(keys, words):
    with pytest.raises(ValidationError) as error:
        ServeConfig.model_validate({"deployment": {"autoscaling": keys}})
    assert all(w in str(error.value) for w in words), str(error.value)


def _wait(condition, limit_s: float, what: str, watch) -> float:
    """Polls `condition()` (calling `watch()` first) every 0.25 s; the seconds it took, or fails naming `what`."""
    started = time.monotonic()
    while time.monotonic() - started < limit_s:
        watch()
        if condition():
            return time.monotonic() - started
        time.sleep(0.25)
    pytest.fail(f"{what} not within {limit_s} s")


@pytest.mark.slow
def test_load_brings_a_second_serving_replica_and_idleness_takes_it_away(ray_cluster):
    with scripted_model(WINDOW_LATENCY_S) as model:
        config = ServeConfig.model_validate(scripted_serve_config(model.base_url, deployment={"autoscaling": FAST}))
        with serving(config, APP) as client:
            assert replica_states(APP) == {"RUNNING": 1}
            log, most_replicas = ReplicaLog(APP), [0]

            def watch() -> None:
                most_replicas[0] = max(most_replicas[0], sum(replica_states(APP).values()))

            def answered_by() -> Counter[str]:
                replica_of = log.read()
                return Counter(replica_of[o.request_id] for o in load.outcomes if o.request_id in replica_of)

            with RerankLoad(str(client.base_url), {"query": QUERY, "documents": DOCS}) as load:
                load.clients(LOAD_CLIENTS)
                up_s = _wait(lambda: replica_states(APP)["RUNNING"] == 2 and len(answered_by()) == 2
                             and min(answered_by().values()) >= 3,
                             PHASE_LIMIT_S, "a second replica running and answering requests", watch)
                during_load = answered_by()

                load.clients(1, pause_s=1.0)  # a request every ~2 s: well below one replica's target
                down_s = _wait(lambda: replica_states(APP) == {"RUNNING": 1}, PHASE_LIMIT_S,
                               "the scale-down to one replica", watch)
                scaled_down = len(load.outcomes) + load.in_flight  # requests sent so far
                _wait(lambda: len(load.outcomes) >= scaled_down + AFTER_SCALE_DOWN, 30,
                      "requests after the scale-down", watch)
                load.clients(0)
                load.wait_idle(30)
            replica_of = log.read()

    outcomes = load.outcomes
    print(f"\nsecond replica serving after {up_s:.1f} s of load; one replica again {down_s:.1f} s after the load "
          f"fell; {len(outcomes)} requests, answered by {dict(during_load)} during the load")
    assert most_replicas[0] == 2  # never more than max_replicas
    assert [o for o in outcomes if o.status != 200] == []  # none failed, across both changes
    assert {o.order for o in outcomes} == {tuple(expected_order(len(DOCS)))}
    finished = sorted(o.finished for o in outcomes)
    assert max(b - a for a, b in zip(finished, finished[1:])) < 10  # answers kept coming throughout (~2 s apart)
    after = [replica_of.get(o.request_id) for o in outcomes[scaled_down:]]
    (left,) = set(after)  # after the scale-down one replica answers everything ...
    assert left in during_load and len(after) >= AFTER_SCALE_DOWN  # ... one of the two that served the load

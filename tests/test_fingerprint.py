"""Every stage records what its results depend on, and a rerun into the same folder with a different config
is refused before any work; the same config resumes."""
from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import yaml

from reasonrank import fingerprint, storage
from reasonrank.config import apply_overrides, load_config, parse_config
from reasonrank.fingerprint import FingerprintMismatch

REPO = Path(__file__).resolve().parent.parent
CONFIGS = REPO / "configs"
EVALUATE = {"strategy": {"window_size": 10, "step": 5, "depth": 20}}  # as the tiny profile


def test_fingerprint_keeps_what_determines_results_and_drops_where_it_runs():
    from jobs.evaluate import EvaluateConfig, results_fingerprint

    cfg = parse_config(EVALUATE, EvaluateConfig)
    keys = results_fingerprint(cfg)
    for key in ("engine.model", "engine.backend", "data.source", "strategy.name", "strategy.window_size",
                "strategy.passage_max_tokens", "sampling.temperature", "sampling.seed", "engine.seed"):
        assert key in keys, key
    for key in ("output_dir", "replicas", "ray_num_cpus", "num_cpus_per_replica", "engine.max_concurrency",
                "engine.gpu_memory_utilization", "baseline_run"):
        assert key not in keys, key
    moved = cfg.model_copy(update={"output_dir": "elsewhere", "replicas": 7, "ray_num_cpus": 64})
    assert results_fingerprint(moved) == keys


def test_mismatch_names_each_changed_key_and_the_ways_out(tmp_path):
    folder = str(tmp_path / "run")
    assert fingerprint.check_and_record(folder, "evaluate", {"a": 1, "b.c": "x"}) is False
    assert fingerprint.check_and_record(folder, "evaluate", {"a": 1, "b.c": "x"}) is True
    with pytest.raises(FingerprintMismatch) as refused:
        fingerprint.check_and_record(folder, "evaluate", {"a": 2, "b.c": "x", "d": True})
    message = str(refused.value)
    assert "a: 1 → 2" in message and "d: unset → true" in message and "b.c" not in message
    assert "--set output_dir=" in message and f"delete {folder}" in message
    with pytest.raises(FingerprintMismatch, match="output of a evaluate run, not grpo"):
        fingerprint.check_and_record(folder, "grpo", {"a": 1, "b.c": "x"})


def test_evaluate_resumes_its_own_run_and_refuses_another(demo_data, tmp_path):
    from jobs.evaluate import EvaluateConfig, evaluate, results_fingerprint

    cfg = parse_config(apply_overrides(copy.deepcopy(EVALUATE), {
        "data.demo_dir": str(demo_data.root), "data.limit": 3, "output_dir": str(tmp_path / "eval")}), EvaluateConfig)
    requests = cfg.data.load().requests(cfg.data.first_stage_depth)
    # a run that reranked every query (each list reversed) before it was stopped
    fingerprint.check_and_record(cfg.output_dir, "evaluate", results_fingerprint(cfg))
    storage.write_jsonl_atomic(str(tmp_path / "eval" / "parts" / "part-00000.jsonl"), [
        {"qid": r.query.qid, "docids": [c.docid for c in r.candidates][::-1], "windows": []} for r in requests])

    other = parse_config(apply_overrides(copy.deepcopy(EVALUATE), {
        "data.demo_dir": str(demo_data.root), "data.limit": 3, "output_dir": str(tmp_path / "eval"),
        "engine.model": "outputs/another-model", "strategy.window_size": 6}), EvaluateConfig)
    with pytest.raises(FingerprintMismatch) as refused:
        evaluate(other)
    assert "engine.model" in str(refused.value) and "strategy.window_size: 10 → 6" in str(refused.value)
    assert not (tmp_path / "eval" / "run.trec").exists()  # refused before any work

    summary = evaluate(cfg.model_copy(update={"replicas": 3}))  # the same run: resumed, nothing left to rerank
    assert summary["queries"] == 3
    run = (tmp_path / "eval" / "run.trec").read_text().split("\n")
    first = requests[0]
    assert run[0].split()[2] == first.candidates[-1].docid  # the parts' rankings, not a new reranking


def test_grpo_refuses_to_resume_another_run_before_starting_actors(demo_data, tiny_model_dir, tmp_path):
    from jobs.grpo import GRPOTrainer, results_fingerprint
    from jobs.grpo_config import GRPOConfig

    base = {"model": str(tiny_model_dir), "data.demo_dir": str(demo_data.root), "output_dir": str(tmp_path / "grpo")}
    cfg = load_config(CONFIGS / "grpo-tiny.yaml", GRPOConfig, base)
    fingerprint.check_and_record(cfg.output_dir, "grpo", results_fingerprint(cfg))
    assert results_fingerprint(load_config(CONFIGS / "grpo-tiny.yaml", GRPOConfig, {
        **base, "rollout.replicas": 3, "checkpoint_every": 1, "eval.every": 2})) == results_fingerprint(cfg)
    other = load_config(CONFIGS / "grpo-tiny.yaml", GRPOConfig, {**base, "seed": 5, "rollout.temperature": 0.7})
    with pytest.raises(FingerprintMismatch) as refused:
        GRPOTrainer(other)  # no Ray started: this test has no cluster fixture
    assert "seed: 0 → 5" in str(refused.value) and "rollout.temperature" in str(refused.value)
    assert sorted(p.name for p in (tmp_path / "grpo").iterdir()) == ["fingerprint.json"]


def test_sft_refuses_a_run_folder_trained_with_another_config(tiny_model_dir, tmp_path):
    from jobs.sft import results_fingerprint, train
    from jobs.sft_config import SFTConfig

    base = {"model.path": str(tiny_model_dir), "data.path": str(tmp_path / "sft.parquet"), "data.demo": None,
            "storage.path": str(tmp_path / "ckpt"), "output_dir": str(tmp_path / "sft")}
    cfg = load_config(CONFIGS / "sft-tiny.yaml", SFTConfig, base)
    run_dir = str(tmp_path / "ckpt" / cfg.storage.name)
    fingerprint.check_and_record(run_dir, "sft", results_fingerprint(cfg))
    other = load_config(CONFIGS / "sft-tiny.yaml", SFTConfig, {**base, "optimizer.lr": 1.0e-3})
    with pytest.raises(FingerprintMismatch) as refused:
        train(other)
    assert "optimizer.lr" in str(refused.value) and "--set storage.name=" in str(refused.value)
    assert not (tmp_path / "sft").exists()


def test_synthesize_refuses_labels_of_another_teacher(demo_data, tmp_path):
    from jobs.synthesize import SynthesizeConfig, results_fingerprint, synthesize

    base = {"data.demo_dir": str(demo_data.root), "output_dir": str(tmp_path / "synth")}
    cfg = load_config(CONFIGS / "synthesize-demo.yaml", SynthesizeConfig, base)
    fingerprint.check_and_record(cfg.output_dir, "synthesize", results_fingerprint(cfg))
    retry_differently = load_config(CONFIGS / "synthesize-demo.yaml", SynthesizeConfig, {
        **base, "alpha": 0.9, "labelers": 5, "teacher.engine.max_retries": 9, "teacher.simulation.fault_rate": 0.3})
    assert results_fingerprint(retry_differently) == results_fingerprint(cfg)
    other = load_config(CONFIGS / "synthesize-demo.yaml", SynthesizeConfig, {**base, "teacher.simulation.noise": 0.4})
    with pytest.raises(FingerprintMismatch, match="teacher.simulation.noise"):
        synthesize(other)
    assert json.loads((tmp_path / "synth" / "fingerprint.json").read_text())["stage"] == "synthesize"
    assert sorted(p.name for p in (tmp_path / "synth").iterdir()) == ["fingerprint.json"]


def test_evaluate_ranks_with_the_prompt_its_model_carries(demo_data, tiny_model_dir, ray_cluster, tmp_path):
    """A model trained on windows of 6 passages cut to 8 tokens: evaluate ranks its windows so, though its
    config sets neither (the strategy's own defaults would be one window of 20 passages of 512 tokens)."""
    import shutil

    from transformers import AutoTokenizer

    from jobs.evaluate import EvaluateConfig, evaluate
    from reasonrank.config import PromptConfig, save_prompt
    from reasonrank.prompt import PassageTruncator, listwise_messages, render

    model = str(tmp_path / "sft" / "final")
    shutil.copytree(tiny_model_dir, model)
    save_prompt(model, PromptConfig(window_size=6, passage_max_tokens=8))
    cfg = parse_config({"strategy": {"step": 5, "depth": 20}, "sampling": {"max_new_tokens": 4},
                        "engine": {"backend": "transformers", "model": model, "dtype": "float32"},
                        "data": {"demo_dir": str(demo_data.root), "limit": 1}, "output_dir": str(tmp_path / "eval")},
                       EvaluateConfig)
    evaluate(cfg)
    used = json.loads((tmp_path / "eval" / "fingerprint.json").read_text())["fingerprint"]
    assert (used["strategy.window_size"], used["strategy.passage_max_tokens"]) == (6, 8)
    (ranked,) = [json.loads(line) for part in sorted((tmp_path / "eval" / "parts").iterdir())
                 for line in part.read_text().splitlines()]
    assert [(w["start"], w["end"]) for w in ranked["windows"]] == [(14, 20), (9, 15), (4, 10), (0, 5)]
    request = cfg.data.load().requests(cfg.data.first_stage_depth)[0]
    tokenizer = AutoTokenizer.from_pretrained(model)

    def prompt_tokens(passage_max_tokens: int | None) -> int:  # the bottom window: first-stage ranks 14..19
        truncate = PassageTruncator(tokenizer, passage_max_tokens, cfg.engine.max_model_len, 4)
        messages = listwise_messages(request.query.text, [c.text for c in request.candidates[14:20]], truncate)
        return len(tokenizer(render(tokenizer, messages), add_special_tokens=False).input_ids)

    assert ranked["windows"][0]["prompt_tokens"] == prompt_tokens(8) < prompt_tokens(None)


# A part reads some keys; the others cannot change what it ranks. The tiny profile's file keeps its sliding window
# settings and its vLLM seed while a run picks another strategy and backend on the command line.
ONE_SHOT_ON_TRANSFORMERS = {"strategy.name": "one_shot", "engine.backend": "transformers"}


def _tiny_evaluate(tmp_path, name: str, edits: dict, overrides: dict):
    from jobs.evaluate import EvaluateConfig

    data = apply_overrides(yaml.safe_load((CONFIGS / "evaluate-tiny.yaml").read_text()), edits)
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data))
    return load_config(path, EvaluateConfig, {"output_dir": str(tmp_path / "eval"), **overrides})


def test_keys_the_chosen_parts_do_not_read_leave_the_fingerprint_and_the_run_resumes(tmp_path):
    from jobs.evaluate import results_fingerprint

    first = _tiny_evaluate(tmp_path, "first.yaml", {}, ONE_SHOT_ON_TRANSFORMERS)
    keys = results_fingerprint(first)
    assert not {"strategy.window_size", "strategy.step", "engine.seed", "engine.enforce_eager"} & keys.keys()
    assert (keys["strategy.name"], keys["engine.backend"], keys["strategy.depth"]) == ("one_shot", "transformers", 20)
    assert fingerprint.check_and_record(first.output_dir, "evaluate", keys) is False
    edited = _tiny_evaluate(tmp_path, "edited.yaml", {"strategy.window_size": 6, "strategy.step": 3,
                                                      "engine.seed": 7}, ONE_SHOT_ON_TRANSFORMERS)
    assert fingerprint.check_and_record(edited.output_dir, "evaluate", results_fingerprint(edited)) is True


@pytest.mark.parametrize("edits,changed", [
    ({"strategy.depth": 12}, "strategy.depth: 20 → 12"),
    ({"engine.dtype": "bfloat16"}, 'engine.dtype: "float32" → "bfloat16"'),
])
def test_a_key_the_chosen_part_reads_refuses_the_resume_naming_it(tmp_path, edits, changed):
    from jobs.evaluate import results_fingerprint

    first = _tiny_evaluate(tmp_path, "first.yaml", {}, ONE_SHOT_ON_TRANSFORMERS)
    fingerprint.check_and_record(first.output_dir, "evaluate", results_fingerprint(first))
    edited = _tiny_evaluate(tmp_path, "edited.yaml", edits, ONE_SHOT_ON_TRANSFORMERS)
    with pytest.raises(FingerprintMismatch) as refused:
        fingerprint.check_and_record(edited.output_dir, "evaluate", results_fingerprint(edited))
    assert changed in str(refused.value) and str(refused.value).count("→") == 1


def test_vllm_reads_its_seed(tmp_path):
    from jobs.evaluate import results_fingerprint

    first, seeded = (_tiny_evaluate(tmp_path, f"{seed}.yaml", {"engine.seed": seed}, {}) for seed in (0, 7))
    fingerprint.check_and_record(first.output_dir, "evaluate", results_fingerprint(first))
    with pytest.raises(FingerprintMismatch, match="engine.seed: 0 → 7"):
        fingerprint.check_and_record(seeded.output_dir, "evaluate", results_fingerprint(seeded))


def test_a_key_added_later_with_a_none_default_keeps_older_runs_resumable(tmp_path):
    folder = str(tmp_path / "run")
    fingerprint.check_and_record(folder, "grpo", {"a": 1})  # recorded before data.path existed
    assert fingerprint.check_and_record(folder, "grpo", {"a": 1, "data.path": None}) is True
    with pytest.raises(FingerprintMismatch, match="data.path: unset → "):
        fingerprint.check_and_record(folder, "grpo", {"a": 1, "data.path": "bench"})

"""SFT: the ZeRO config builder, assistant-only loss masks, the config files, and that SFT really teaches
the tiny model the task (Ray Train + DeepSpeed on gloo, then greedy reranking of held-out queries)."""
from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pytest

from reasonrank.config import ConfigError, load_config
from reasonrank.training.chat_tokenize import chat_segments, tokenize_chat, tokenize_chat_batch
from reasonrank.training.config import DeepSpeedConfig, OptimizerConfig
from reasonrank.training.zero_config import build_ds_config

REPO = Path(__file__).resolve().parent.parent


# --- the ZeRO config ----------------------------------------------------------------------------------

@pytest.mark.parametrize("stage", [0, 1, 2, 3])
def test_ds_config_carries_the_stage_and_the_batch_arithmetic(stage):
    cfg = build_ds_config(DeepSpeedConfig(zero_stage=stage, precision="fp32"), OptimizerConfig(lr=1e-5),
                          micro_batch_size=2, grad_accum=4, world_size=3)
    assert cfg["zero_optimization"]["stage"] == stage
    assert cfg["train_batch_size"] == 2 * 4 * 3
    assert cfg["train_micro_batch_size_per_gpu"] == 2 and cfg["gradient_accumulation_steps"] == 4
    assert cfg["optimizer"]["params"]["lr"] == 1e-5
    assert cfg["optimizer"]["params"]["torch_adam"] is True  # no 40 s CPU-Adam compile
    assert cfg["bf16"]["enabled"] is False
    assert ("stage3_gather_16bit_weights_on_model_save" in cfg["zero_optimization"]) == (stage == 3)
    assert "offload_optimizer" not in cfg["zero_optimization"]


def test_ds_config_offload_and_precision():
    cfg = build_ds_config(DeepSpeedConfig(zero_stage=3, offload_optimizer=True, offload_params=True, precision="bf16"),
                          OptimizerConfig(), micro_batch_size=1, grad_accum=1, world_size=8)
    zero = cfg["zero_optimization"]
    assert zero["offload_optimizer"]["device"] == "cpu" and zero["offload_param"]["device"] == "cpu"
    assert cfg["optimizer"]["params"]["torch_adam"] is False  # ZeRO-Offload runs DeepSpeed's CPU Adam
    assert cfg["bf16"]["enabled"] is True


@pytest.mark.parametrize("bad", [{"zero_stage": 2, "offload_params": True}, {"zero_stage": 0, "offload_optimizer": True},
                                 {"zero_stage": 4}])
def test_deepspeed_config_rejects_impossible_combinations(bad):
    with pytest.raises(ValueError):
        DeepSpeedConfig(**bad)


def test_ds_config_rejects_an_empty_batch():
    with pytest.raises(ValueError, match="must be >= 1"):
        build_ds_config(DeepSpeedConfig(), OptimizerConfig(), micro_batch_size=0, grad_accum=1, world_size=1)


# --- assistant-only loss masks ------------------------------------------------------------------------

def _conversation(turns: int = 1) -> list[dict[str, str]]:
    messages = [{"role": "system", "content": "You rank passages."},
                {"role": "user", "content": "Rank [1] a, [2] b for the query c."}]
    for t in range(turns):
        if t:
            messages.append({"role": "user", "content": f"Again, round {t}."})
        messages.append({"role": "assistant", "content": f"<think>round {t}</think><answer>[2] > [1]</answer>"})
    return messages


@pytest.mark.parametrize("turns", [1, 2])
def test_loss_mask_covers_exactly_the_assistant_turns(tiny_model_dir, turns):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    messages = _conversation(turns)
    chat = tokenize_chat(tok, messages)
    # the tiny model's template marks assistant text with {% generation %}: transformers' own mask agrees
    ref = tok.apply_chat_template(messages, tokenize=True, return_dict=True, return_assistant_tokens_mask=True)
    assert chat.input_ids == ref["input_ids"]
    assert chat.loss_mask == list(ref["assistant_masks"])
    trained = tok.decode([i for i, m in zip(chat.input_ids, chat.loss_mask) if m])
    assert trained == "".join(m["content"] + "<|im_end|>" for m in messages if m["role"] == "assistant")
    # the untrained part of a one-turn sample is exactly the serving prompt
    if turns == 1:
        prompt = tok.apply_chat_template(messages[:-1], tokenize=False, add_generation_prompt=True)
        assert tok.decode(chat.input_ids[: chat.loss_mask.index(1)]) == prompt


def test_a_template_that_rewrites_history_is_rejected(tiny_model_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    # like templates that drop earlier reasoning: the last assistant turn is rendered differently from history
    tok.chat_template = ("{%- for m in messages %}{%- if m['role'] == 'assistant' and not loop.last %}"
                         "{{ '<|im_start|>assistant\\n(earlier answer)<|im_end|>\\n' }}{%- else %}"
                         "{{ '<|im_start|>' + m['role'] + '\\n' + m['content'] + '<|im_end|>\\n' }}{%- endif %}"
                         "{%- endfor %}{%- if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{%- endif %}")
    with pytest.raises(ValueError, match="prefix"):
        chat_segments(tok, _conversation(2))
    with pytest.raises(ValueError, match="no assistant turn"):
        chat_segments(tok, _conversation(1)[:-1])


def test_batch_tokenizer_flags_overlong_samples_and_names_missing_columns(tiny_model_dir):
    short, long = _conversation(1), _conversation(1)
    long[1] = {"role": "user", "content": "word " * 400}
    batch = pa.Table.from_pylist([{"id": "a", "messages": short}, {"id": "b", "messages": long}])
    out = tokenize_chat_batch(batch, str(tiny_model_dir), max_seq_len=200)
    assert out.column("fits").to_pylist() == [True, False]
    lengths = out.column("num_tokens").to_pylist()
    assert lengths[0] == len(out.column("input_ids")[0]) and lengths[1] > 200
    with pytest.raises(ValueError, match="messages"):
        tokenize_chat_batch(pa.table({"id": ["a"]}), str(tiny_model_dir), 200)


def test_a_collated_batch_gives_each_sequences_own_loss(tiny_model_dir):
    """`collate` leaves out the attention mask and the logits before the first target: the batch's loss must
    still be the token-weighted mean of each sequence's loss computed alone, unpadded, over all its logits.
    Lengths and the first targets differ, so padding and the cut both matter."""
    import torch
    from transformers import AutoModelForCausalLM

    from reasonrank.training.chat_tokenize import IGNORE_INDEX, collate

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    g = torch.Generator().manual_seed(0)
    seqs = [torch.randint(10, 4000, (n,), generator=g).tolist() for n in (50, 63, 41)]
    masks = [[0] * 30 + [1] * 20, [0] * 25 + [1] * 30 + [0] * 8, [0] * 35 + [1] * 6]
    batch = collate(seqs, masks, pad_id=0)
    with torch.no_grad():
        batched = model(**batch).loss
        total = 0.0
        for seq, mask in zip(seqs, masks):
            ids = torch.tensor([seq])
            labels = torch.where(torch.tensor([mask]).bool(), ids, IGNORE_INDEX)
            total += model(input_ids=ids, labels=labels).loss * sum(mask)  # its mean over its targets
    assert batched.item() == pytest.approx(total.item() / sum(sum(m) for m in masks), rel=1e-5)
    assert "attention_mask" not in batch and batch["logits_to_keep"] == 63 - 24 == batch["labels"].shape[1]


def test_a_step_counts_every_trained_token(tiny_model_dir):
    """The step record's `trained_tokens` counts the loss mask's ones as the data path hands them over (int8
    rows): more than an int8 or uint8 sum could hold."""
    import numpy as np
    import torch
    from transformers import AutoModelForCausalLM

    from jobs.sft import _ragged
    from reasonrank.training.sft_loop import MicroBatch, _one_step

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)

    class Engine:  # the DeepSpeed engine's surface the step uses, over the plain model
        device = torch.device("cpu")

        def get_lr(self):
            return [1e-5]

        def __call__(self, **batch):
            return model(**batch)

        def backward(self, loss):
            pass

        def step(self):
            pass

    lengths, targets = (400, 330), (300, 250)
    column = pa.chunked_array([pa.array([[0] * (n - t) + [1] * t for n, t in zip(lengths, targets)],
                                        type=pa.list_(pa.int8()))])
    masks = _ragged(column)
    ids = [np.arange(10, 10 + n) for n in lengths]
    record = _one_step(Engine(), [MicroBatch(["a", "b"], ids, masks)], pad_id=0, device=Engine.device,
                       epoch=0, step=1)
    assert record["trained_tokens"] == 550 and record["tokens"] == 730


# --- configs ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["sft-tiny.yaml", "sft-qwen2.5-7b.yaml", "sft-qwen2.5-32b-lora.yaml"])
def test_shipped_sft_configs_validate(name):
    from jobs.sft_config import SFTConfig

    cfg = load_config(REPO / "configs" / name, SFTConfig)
    assert cfg.train.checkpoint_every >= 1 and min(cfg.scaling.world_sizes) >= 1


def test_paper_profiles_train_as_the_paper_did(tiny_model_dir):
    """What the paper's profiles hand DeepSpeed: ZeRO-3 in bf16 at lr 5e-6, and the 32B profile trains LoRA
    adapters of rank 32 and nothing else."""
    from jobs.sft_config import SFTConfig

    full = load_config(REPO / "configs" / "sft-qwen2.5-7b.yaml", SFTConfig)
    ds = build_ds_config(full.deepspeed, full.optimizer, micro_batch_size=full.train.micro_batch_size,
                         grad_accum=full.train.global_batch_size // (full.train.micro_batch_size * 8), world_size=8)
    assert ds["zero_optimization"]["stage"] == 3 and ds["bf16"]["enabled"] is True
    assert ds["optimizer"]["params"]["lr"] == 5e-6
    assert (full.optimizer.schedule, full.optimizer.warmup_ratio) == ("cosine", 0.1) and full.model.lora is None
    assert full.data.max_seq_len >= 20_000 and full.scaling.use_gpu  # the paper's ~23K-token samples fit

    from reasonrank.training.config import ModelConfig
    from reasonrank.training.deepspeed_engine import load_causal_lm

    lora = load_config(REPO / "configs" / "sft-qwen2.5-32b-lora.yaml", SFTConfig).model.lora
    stage0 = build_ds_config(DeepSpeedConfig(zero_stage=0, precision="fp32"), OptimizerConfig(), micro_batch_size=1,
                             grad_accum=1, world_size=1)
    adapted = load_causal_lm(ModelConfig(path=str(tiny_model_dir), lora=lora), stage0).model  # the tiny Qwen2
    assert adapted.peft_config["default"].r == 32
    trainable = {n for n, p in adapted.named_parameters() if p.requires_grad}
    projections = {n.split(".lora_")[0].rsplit(".", 1)[-1] for n in trainable}
    assert projections == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}  # every
    # attention and MLP projection of the model carries an adapter …
    assert all("lora_" in n for n in trainable)  # … and nothing else trains


def test_a_misspelled_key_is_named(tmp_path):
    from jobs.sft_config import SFTConfig

    path = tmp_path / "bad.yaml"
    path.write_text("data: {path: x.parquet}\nmodel: {path: m}\ntrain: {micro_batch: 2}\n")
    with pytest.raises(ConfigError, match=r"train\.micro_batch"):
        load_config(path, SFTConfig)


# --- it learns ----------------------------------------------------------------------------------------

# A smaller scale than `make demo`: windows of 5 (step 3, over the top 20) instead of 10, shorter answers.
WINDOW, STEP = 5, 3
LEARN_STEPS = 600
HELD_OUT = 12  # test queries, 6 windows each
FORMED_BAR, NDCG_LIFT = 0.8, 0.05  # measured: 0% -> 94% well-formed, NDCG@10 0.440 -> 0.632


def _rerank_held_out(model_dir, demo_data, queries: int) -> tuple[float, float]:
    """(share of well-formed windows, NDCG@10) of greedy sliding-window reranking of held-out queries with
    the windows the model was trained on."""
    from reasonrank.config import EngineConfig
    from reasonrank.engines import build_engine
    from reasonrank.engines.base import SamplingParams
    from reasonrank.metrics import evaluate_run
    from reasonrank.prompt import PassageTruncator
    from reasonrank.strategies import SlidingWindow, rank_requests

    test = demo_data.load().subset("test")
    requests = test.requests(20)[:queries]
    engine = build_engine(EngineConfig(backend="transformers", model=str(model_dir), dtype="float32"))
    try:
        ranked = rank_requests(engine, SlidingWindow(WINDOW, STEP, 20), requests, SamplingParams(max_new_tokens=192),
                        PassageTruncator(engine.tokenizer, 64))
    finally:
        engine.close()
    windows = [w for r in ranked for w in r.windows]
    run = {r.qid: {d: float(len(r.docids) - i) for i, d in enumerate(r.docids)} for r in ranked}
    qrels = {r.query.qid: test.qrels[r.query.qid] for r in requests}
    return sum(w.well_formed for w in windows) / len(windows), evaluate_run(run, qrels)["ndcg@10"]


@pytest.mark.slow
def test_sft_teaches_format_and_relevance_on_held_out_queries(ray_cluster, demo_data, tiny_model_dir, tmp_path):
    """The SFT job (Ray Train, 2 DeepSpeed ZeRO-2 workers on gloo) on the gold demo SFT set: the untrained
    model never answers in the format and keeps the first-stage order; the trained one answers in format and
    lifts NDCG@10 on held-out queries."""
    from jobs import sft

    summary = sft.run(str(REPO / "configs" / "sft-tiny.yaml"), {
        "data.path": str(tmp_path / "train.parquet"), "data.demo.demo_dir": str(demo_data.root),
        "data.demo.window_size": WINDOW, "data.demo.step": STEP,
        "model.path": str(tiny_model_dir), "build_tiny_model": False, "train.max_steps": LEARN_STEPS,
        "storage.path": str(tmp_path / "checkpoints"), "output_dir": str(tmp_path / "sft"), "ray_num_cpus": None})
    assert summary["steps"] == LEARN_STEPS and summary["final_loss"] < summary["first_loss"] / 4
    history = [json.loads(line) for line in (tmp_path / "sft" / "history.jsonl").read_text().splitlines()]
    assert [r["step"] for r in history] == list(range(1, LEARN_STEPS + 1))
    assert all(r["tokens_per_s"] > 0 and r["step_time_s"] > 0 for r in history)
    lrs = [r["lr"] for r in history]  # warmup to the configured rate, then the cosine decay
    assert max(lrs) == pytest.approx(2e-3, rel=0.05) and lrs[-1] < max(lrs) / 10 and lrs[0] < max(lrs)
    assert (tmp_path / "sft" / "loss_curve.png").stat().st_size > 5_000

    untrained_formed, untrained_ndcg = _rerank_held_out(tiny_model_dir, demo_data, HELD_OUT)
    formed, ndcg = _rerank_held_out(summary["model"], demo_data, HELD_OUT)
    print(f"well-formed {untrained_formed:.0%} -> {formed:.0%}; NDCG@10 {untrained_ndcg:.3f} -> {ndcg:.3f}")
    assert untrained_formed < 0.05 and formed >= FORMED_BAR
    assert ndcg > untrained_ndcg + NDCG_LIFT

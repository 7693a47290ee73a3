"""GRPO's math against hand-computed cases: advantage estimators, KL estimators, clipped loss, the
truncated behaviour importance weight of decoupled PPO, aggregations."""
from __future__ import annotations

import math

import pytest
import torch

from reasonrank.rl.advantages import ADVANTAGE_ESTIMATORS, dr_grpo_advantages, grpo_advantages, rloo_advantages
from reasonrank.rl.kl import KL_ESTIMATORS, kl_k1, kl_k2, kl_k3
from reasonrank.rl.losses import (GRPOLoss, clipped_policy_loss, seq_mean_token_mean, seq_mean_token_sum,
                                  token_mean, truncated_importance_weight)


def close(a: torch.Tensor, b) -> None:
    torch.testing.assert_close(a, torch.as_tensor(b, dtype=a.dtype), atol=1e-5, rtol=1e-5)


# --- advantages ---------------------------------------------------------------------------------------------

def test_grpo_advantages_normalise_by_group_mean_and_unbiased_std():
    # group 1: mean 0.5, unbiased std sqrt(1/3) -> ±0.5/0.57735 = ±0.866025; group 2: all equal -> 0
    adv = grpo_advantages(torch.tensor([[1.0, 0.0, 0.0, 1.0], [0.3, 0.3, 0.3, 0.3]]))
    close(adv, [[0.866025, -0.866025, -0.866025, 0.866025], [0.0, 0.0, 0.0, 0.0]])


def test_dr_grpo_advantages_only_subtract_the_group_mean():
    close(dr_grpo_advantages(torch.tensor([[1.0, 0.0, 0.0, 1.0], [3.0, 1.0, 2.0, 2.0]])),
          [[0.5, -0.5, -0.5, 0.5], [1.0, -1.0, 0.0, 0.0]])


def test_rloo_baseline_is_the_mean_of_the_other_responses():
    # 1 - (2+3)/2 = -1.5 ; 2 - (1+3)/2 = 0 ; 3 - (1+2)/2 = 1.5
    close(rloo_advantages(torch.tensor([[1.0, 2.0, 3.0]])), [[-1.5, 0.0, 1.5]])


@pytest.mark.parametrize("name", sorted(ADVANTAGE_ESTIMATORS))
def test_every_estimator_rejects_a_flat_reward_vector(name):
    with pytest.raises(ValueError, match="num_prompts, G"):
        ADVANTAGE_ESTIMATORS[name](torch.tensor([1.0, 2.0]))


# --- KL estimators ------------------------------------------------------------------------------------------

def test_kl_estimators_on_one_token():
    # pi = 0.5, pi_ref = 0.25: log_ratio = ln 2
    lp, ref = torch.tensor([math.log(0.5)]), torch.tensor([math.log(0.25)])
    ln2 = math.log(2.0)
    close(kl_k1(lp, ref), [ln2])
    close(kl_k2(lp, ref), [0.5 * ln2 ** 2])
    close(kl_k3(lp, ref), [0.5 - 1.0 + ln2])  # pi_ref/pi - 1 - log(pi_ref/pi)


def test_k1_and_k3_are_unbiased_and_k3_never_negative():
    p = torch.tensor([0.5, 0.3, 0.2])
    q = torch.tensor([0.2, 0.2, 0.6])
    true_kl = (p * (p / q).log()).sum()
    lp, lq = p.log(), q.log()
    close((p * kl_k1(lp, lq)).sum(), true_kl)  # expectation over x ~ p, exactly
    close((p * kl_k3(lp, lq)).sum(), true_kl)
    assert (kl_k3(lp, lq) >= 0).all() and (kl_k2(lp, lq) >= 0).all()
    assert (kl_k1(lp, lq) < 0).any()  # k1 is the one that can go negative
    assert set(KL_ESTIMATORS) == {"k1", "k2", "k3"}


# --- policy loss --------------------------------------------------------------------------------------------

def test_clipped_policy_loss_takes_the_pessimistic_branch():
    up, down = 0.5, math.log(0.5)  # ratios e^0.5 = 1.6487 and 0.5
    logprobs = torch.tensor([up, up, down, down])
    old = torch.zeros(4)
    adv = torch.tensor([1.0, -1.0, 1.0, -1.0])
    loss, clipped = clipped_policy_loss(logprobs, old, adv, clip_eps=0.2)
    # A>0, ratio 1.65: min(1.65, 1.2) -> -1.2 clipped | A<0, ratio 1.65: -(-1.65) = 1.6487 unclipped
    # A>0, ratio 0.5: -0.5 unclipped                  | A<0, ratio 0.5: max(0.5, 0.8) = 0.8 clipped
    close(loss, [-1.2, math.exp(0.5), -0.5, 0.8])
    close(clipped, [1.0, 0.0, 0.0, 1.0])


def test_aggregations():
    values = torch.tensor([[1.0, 2.0, 3.0], [4.0, 9.0, 9.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 0.0, 0.0]])  # the 9s are padding
    close(token_mean(values, mask), (1 + 2 + 3 + 4) / 4)
    close(seq_mean_token_mean(values, mask), (2 + 4) / 2)
    close(seq_mean_token_sum(values, mask), (6 + 4) / 2)


def test_grpo_loss_gradient_and_kl_term_on_policy():
    # On policy (logprobs == old): ratio 1, loss = -token_mean(A); d loss / d logprob_t = -A_t / num_tokens.
    logprobs = torch.tensor([[-1.0, -2.0, -3.0], [-0.5, -9.0, -9.0]], requires_grad=True)
    mask = torch.tensor([[1, 1, 1], [1, 0, 0]])
    adv = torch.tensor([1.0, -2.0])
    ref = logprobs.detach() - torch.tensor([[math.log(2.0), 0.0, 0.0], [0.0, 0.0, 0.0]])
    loss_fn = GRPOLoss(clip_eps=0.2, kl_coef=0.1, kl_estimator="k3", aggregation="token_mean")
    loss, stats = loss_fn(logprobs, logprobs.detach(), ref, adv, mask)
    k3 = 0.5 - 1.0 + math.log(2.0)  # one token with log_ratio ln 2, the rest 0
    expected_policy = -(1.0 * 3 + -2.0 * 1) / 4
    assert stats["policy_loss"] == pytest.approx(expected_policy)
    assert stats["kl"] == pytest.approx(k3 / 4)
    assert loss.item() == pytest.approx(expected_policy + 0.1 * k3 / 4)
    assert stats["clip_fraction"] == 0.0
    loss.backward()
    # k3's gradient wrt logprob is 1 - exp(-log_ratio): 1 - 1/2 on the first token, 0 elsewhere.
    expected_grad = torch.tensor([[-1.0 / 4 + 0.1 * 0.5 / 4, -1.0 / 4, -1.0 / 4], [2.0 / 4, 0.0, 0.0]])
    close(logprobs.grad, expected_grad)


def test_truncated_importance_weight_by_hand():
    proximal = torch.tensor([-1.0, 0.0, -2.0, -0.7])
    behaviour = torch.tensor([-1.5, -2.0, -1.0, -0.7])
    # pi_prox/pi_behav = e^0.5, e^2 (cut to the cap 2), e^-1, and 1 where the engine's weights are the learner's
    close(truncated_importance_weight(proximal, behaviour, cap=2.0), [math.exp(0.5), 2.0, math.exp(-1.0), 1.0])


def test_decoupled_loss_weights_each_token_by_its_truncated_behaviour_ratio():
    """Off-policy (decoupled PPO): the clipped ratio is against the proximal policy (here the current weights,
    so ratio 1), and each token's surrogate is scaled by min(pi_prox/pi_behav, cap), with no gradient
    through the weight: d loss / d logprob_t = -w_t A_t / num_tokens."""
    logprobs = torch.tensor([[-1.0, 0.0, -2.0], [-0.5, -9.0, -9.0]], requires_grad=True)
    behaviour = torch.tensor([[-1.5, -2.0, -1.0], [-0.5, 0.0, 0.0]])  # the second row's pads say nothing
    mask = torch.tensor([[1, 1, 1], [1, 0, 0]])
    adv = torch.tensor([1.0, -2.0])
    loss_fn = GRPOLoss(clip_eps=0.2, kl_coef=0.0, is_cap=2.0)
    loss, stats = loss_fn(logprobs, logprobs.detach(), None, adv, mask, behaviour_logprobs=behaviour)
    w = [math.exp(0.5), 2.0, math.exp(-1.0), 1.0]
    expected = -(w[0] + w[1] + w[2] - 2.0 * w[3]) / 4
    assert loss.item() == pytest.approx(expected) and stats["policy_loss"] == pytest.approx(expected)
    assert stats["is_weight_mean"] == pytest.approx(sum(w) / 4)
    assert stats["is_weight_max"] == pytest.approx(math.exp(2.0))  # before truncation: how far off-policy it got
    assert stats["is_truncated"] == pytest.approx(1 / 4)
    loss.backward()
    close(logprobs.grad, [[-w[0] / 4, -w[1] / 4, -w[2] / 4], [2.0 * w[3] / 4, 0.0, 0.0]])
    # on-policy (no cap) the same batch is the plain clipped loss, and the weight needs its log-probabilities
    assert GRPOLoss(kl_coef=0.0)(logprobs, logprobs.detach(), None, adv, mask)[0].item() == pytest.approx(-(3 - 2) / 4)
    with pytest.raises(ValueError, match="behaviour"):
        loss_fn(logprobs, logprobs.detach(), None, adv, mask)


def test_grpo_loss_rejects_unknown_choices():
    with pytest.raises(ValueError, match="KL estimator"):
        GRPOLoss(kl_estimator="k4")
    with pytest.raises(ValueError, match="aggregation"):
        GRPOLoss(aggregation="seq_sum")


# --- rollout batches, sampler, gold set ---------------------------------------------------------------------

def test_pack_left_pads_prompts_and_right_pads_responses():
    from reasonrank.rl.batch import pack

    b = pack([[5, 6, 7], [8]], [[1, 2], [3, 4, 9]], pad_id=0)
    assert b.input_ids.tolist() == [[5, 6, 7, 1, 2, 0], [0, 0, 8, 3, 4, 9]]
    assert b.attention_mask.tolist() == [[1, 1, 1, 1, 1, 0], [0, 0, 1, 1, 1, 1]]
    assert b.position_ids.tolist() == [[0, 1, 2, 3, 4, 4], [0, 0, 0, 1, 2, 3]]
    assert b.response_ids.tolist() == [[1, 2, 0], [3, 4, 9]]
    assert b.response_mask.tolist() == [[1, 1, 0], [1, 1, 1]]
    with pytest.raises(ValueError, match="no tokens"):
        pack([[1]], [[]], pad_id=0)


def test_response_logprobs_match_a_plain_forward_of_each_sequence():
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from reasonrank.rl.batch import pack, response_logprobs

    torch.manual_seed(0)
    model = Qwen2ForCausalLM(Qwen2Config(vocab_size=50, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                         num_attention_heads=2, num_key_value_heads=2)).eval()
    prompts, responses = [[3, 4, 5, 6], [7, 8]], [[9, 10], [11, 12, 13]]
    with torch.no_grad():
        packed = response_logprobs(model, pack(prompts, responses, pad_id=0), temperature=0.7)
        for i, (p, r) in enumerate(zip(prompts, responses)):
            logits = model(torch.tensor([p + r])).logits[0].float() / 0.7
            expected = torch.log_softmax(logits, -1)[len(p) - 1: len(p) + len(r) - 1].gather(
                -1, torch.tensor(r).unsqueeze(-1)).squeeze(-1)
            close(packed[i, : len(r)], expected)


def test_sampler_resumes_where_it_stopped_and_reshuffles_each_epoch():
    from reasonrank.rl.sampler import PromptSampler

    straight = PromptSampler(5, seed=3)
    seen = [straight.next_indices(3) for _ in range(4)]  # 12 rows: two full epochs and part of a third
    assert sorted(seen[0] + seen[1][:2]) == list(range(5)) and sorted(seen[1][2:] + seen[2] + seen[3][:1]) == list(range(5))
    assert seen[0] + seen[1][:2] != seen[1][2:] + seen[2] + seen[3][:1]  # a new order per epoch
    interrupted = PromptSampler(5, seed=3)
    interrupted.next_indices(3), interrupted.next_indices(3)
    resumed = PromptSampler(5, seed=3)
    resumed.load_state_dict(interrupted.state_dict())
    assert [resumed.next_indices(3), resumed.next_indices(3)] == seen[2:]
    with pytest.raises(ValueError, match="not the same RL set"):
        PromptSampler(6, seed=3).load_state_dict(interrupted.state_dict())


def test_gold_set_puts_relevant_passages_first_and_skips_queries_without_any():
    from reasonrank.data.dataset import RetrievalDataset
    from reasonrank.rl.gold_set import gold_rl_samples
    from reasonrank.types import Query

    corpus = {f"d{i}": f"passage {i}" for i in range(6)}
    run = {"q1": {"d0": 6.0, "d1": 5.0, "d2": 4.0, "d3": 3.0}, "q2": {"d4": 2.0, "d5": 1.0}}
    qrels = {"q1": {"d2": 1, "d1": 2, "d9": 1}, "q2": {"d0": 1}}
    ds = RetrievalDataset([Query("q1", "one"), Query("q2", "two")], corpus, qrels, run)
    (sample,) = gold_rl_samples(ds, window=3)  # q2 has no relevant passage in its window
    assert sample.docids == ["d0", "d1", "d2"]
    assert sample.teacher_ranking == ["d1", "d2", "d0"]  # grade 2, then grade 1, then the rest
    assert sample.relevant_docids == ["d1", "d2"]


# --- the evaluation reward's change over a run ------------------------------------------------------------

def test_reward_change_pairs_the_first_and_last_evaluation_over_prompts():
    from jobs.grpo_report import reward_change

    evals = [{"step": 0, "prompt_rewards": {"a": 0.0, "b": 0.5, "c": -1.0}},
             {"step": 8, "prompt_rewards": {"a": 9.0, "b": 9.0, "c": 9.0}},  # a middle evaluation: not read
             {"step": 16, "prompt_rewards": {"a": 1.0, "b": 0.5, "c": 1.0}}]
    change = reward_change(evals)
    assert change.before == pytest.approx(-0.5 / 3) and change.after == pytest.approx(2.5 / 3)
    # SE = sample std / sqrt(n): before (0, 0.5, -1): std sqrt(0.583333); after (1, .5, 1): std sqrt(0.083333)
    assert change.before_se == pytest.approx(math.sqrt(0.583333 / 3), rel=1e-5)
    assert change.after_se == pytest.approx(math.sqrt(0.083333 / 3), rel=1e-5)
    # paired differences (1, 0, 2): mean 1, std 1
    assert change.difference == pytest.approx(1.0)
    assert change.se == pytest.approx(1 / math.sqrt(3))
    assert change.ci_low <= change.difference <= change.ci_high

"""GRPO's mathematics, with no Ray and no engine: advantages, KL estimators, policy losses, rollout batches.

    advantages.py  group-relative advantages (GRPO, Dr. GRPO, RLOO), one small function each
    kl.py          the k1 / k2 / k3 Monte-Carlo estimators of KL(policy || reference)
    losses.py      the clipped policy loss and its aggregations over tokens and sequences
    rollout.py     one sampled response with its tokens, logprobs, weights version, reward, advantage
    batch.py       rollouts → padded token tensors; response log-probabilities of a causal LM
    sampler.py     which RL rows each step takes, with a resumable cursor
    gold_set.py    an RL set from a dataset's relevance labels (the demo's stand-in for a teacher)
    reference.py   the frozen reference policy (colocated in a learner, or in its own actor)
    curves.py      the reward-curve plot

The actors in `actors/` and the loop in `jobs/grpo.py` only wire these together.
"""

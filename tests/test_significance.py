"""Paired comparison of two rankers over the same queries (reasonrank/significance.py)."""
from __future__ import annotations

import numpy as np
import pytest

from reasonrank.significance import PairedDifference, paired_difference


def test_randomisation_p_value_of_three_queries_by_hand():
    # Differences 0.1, 0.2, 0.3 (mean 0.2). Swapping each query's pair flips its sign: of the 8 sign
    # patterns only +++ and --- reach |mean| >= 0.2, so the exact two-sided p is 2/8.
    d = paired_difference({"a": 0.5, "b": 0.4, "c": 0.1}, {"a": 0.6, "b": 0.6, "c": 0.4}, "ndcg@10")
    assert d.queries == 3
    assert d.baseline == pytest.approx(1.0 / 3) and d.system == pytest.approx(1.6 / 3)
    assert d.difference == pytest.approx(0.2)
    assert d.p_value == pytest.approx(0.25)
    assert 0.1 - 1e-9 <= d.ci_low <= d.difference <= d.ci_high <= 0.3 + 1e-9  # within the observed range


def test_a_consistent_gain_is_significant_and_noise_is_not():
    rng = np.random.default_rng(1)
    base = {f"q{i}": float(v) for i, v in enumerate(rng.uniform(0.2, 0.8, 200))}
    better = {q: v + 0.05 + float(rng.normal(0, 0.05)) for q, v in base.items()}
    noise = {q: v + float(rng.normal(0, 0.05)) for q, v in base.items()}
    gain = paired_difference(base, better, "ndcg@10")
    assert gain.p_value < 0.001 and 0.03 < gain.ci_low < 0.05 < gain.ci_high < 0.07
    assert "paired randomisation p < 0.001, 200 queries" in gain.describe()
    same = paired_difference(base, noise, "ndcg@10")
    assert same.p_value > 0.05 and same.ci_low < 0 < same.ci_high


def test_identical_rankers_differ_by_exactly_nothing():
    scores = {"a": 0.3, "b": 0.9, "c": 0.5}
    d = paired_difference(scores, dict(scores), "mrr@10")
    assert (d.difference, d.ci_low, d.ci_high, d.p_value) == (0.0, 0.0, 0.0, 1.0)


def test_runs_over_different_queries_are_refused_by_name():
    with pytest.raises(ValueError, match=r"ndcg@10: 2 queries are scored by only one ranker.*'b'.*'c'"):
        paired_difference({"a": 0.1, "b": 0.2}, {"a": 0.3, "c": 0.4}, "ndcg@10")
    with pytest.raises(ValueError, match="at least 2 queries"):
        paired_difference({"a": 0.1}, {"a": 0.3}, "ndcg@10")


def test_a_summary_dict_describes_what_the_comparison_did():
    d = paired_difference({"a": 0.5, "b": 0.4, "c": 0.1}, {"a": 0.6, "b": 0.6, "c": 0.4}, "ndcg@10")
    back = PairedDifference.from_dict(d.as_dict())
    assert back == d and d.as_dict()["difference"] == pytest.approx(0.2)
    assert d.describe().startswith("ndcg@10 +0.2000 (95% CI ") and "p = 0.250, 3 queries" in d.describe()

"""Is one ranker better than another on the same queries, or could the choice of queries alone make the gap?

Two rankers evaluated on a few hundred held-out queries differ by amounts of the size that sampling the
queries makes. Compared query by query (each query ranked by both), the mean difference comes with
- a 95% confidence interval: the queries resampled with replacement (`scipy.stats.bootstrap`, BCa), and
- the p-value of a two-sided paired randomisation test: each query's two scores swapped at random
  (`scipy.stats.permutation_test`), the test Smucker, Allan and Carterette recommend for IR evaluation
  ("A Comparison of Statistical Significance Tests for Information Retrieval Evaluation", CIKM 2007).

`compare_runs` makes the comparison for two whole runs (what the evaluate job's `baseline_run` and
`reasonrank compare RUN_A RUN_B --qrels …` report).
"""
from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np
from scipy import stats

from reasonrank.metrics import per_query_metrics

_METRIC = re.compile(r"(ndcg|recall|mrr)@([1-9][0-9]*)")


@dataclass(frozen=True)
class PairedDifference:
    """`system` minus `baseline` on one metric, over the queries both ranked."""

    metric: str
    queries: int
    baseline: float  # mean over the queries
    system: float
    ci_low: float  # 95% confidence interval of system - baseline
    ci_high: float
    p_value: float  # two-sided: the chance of a mean difference at least this large if the two were alike

    @property
    def difference(self) -> float:
        return self.system - self.baseline

    def describe(self) -> str:
        p = f"p = {self.p_value:.3f}" if self.p_value >= 0.001 else "p < 0.001"
        return (f"{self.metric} {self.difference:+.4f} (95% CI {self.ci_low:+.4f} to {self.ci_high:+.4f}, "
                f"paired randomisation {p}, {self.queries} queries)")

    def as_dict(self) -> dict[str, float | int | str]:
        return {**asdict(self), "difference": self.difference}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> PairedDifference:
        """Back from `as_dict` (e.g. a job summary)."""
        return cls(**{f.name: d[f.name] for f in fields(cls)})


def paired_difference(baseline: Mapping[str, float], system: Mapping[str, float], metric: str,
                      resamples: int = 9999, seed: int = 0) -> PairedDifference:
    """Compare per-query scores (qid -> value) of two rankers; both must have scored the same queries."""
    only = set(baseline) ^ set(system)
    if only:
        raise ValueError(f"{metric}: {len(only)} queries are scored by only one ranker (e.g. {sorted(only)[:3]}); "
                         "compare runs over the same queries")
    qids = sorted(baseline)
    if len(qids) < 2:
        raise ValueError(f"{metric}: a paired comparison needs at least 2 queries, got {len(qids)}")
    a = np.array([baseline[q] for q in qids], dtype=float)
    b = np.array([system[q] for q in qids], dtype=float)
    diff = b - a
    rng = np.random.default_rng(seed)
    if np.ptp(diff) == 0:  # every query moved by the same amount: no spread to resample
        low = high = float(diff[0])
    else:
        ci = stats.bootstrap((diff,), np.mean, n_resamples=resamples, rng=rng).confidence_interval
        low, high = float(ci.low), float(ci.high)
    test = stats.permutation_test((b, a), lambda x, y, axis: np.mean(x - y, axis=axis), vectorized=True,
                                  permutation_type="samples", n_resamples=resamples, rng=rng)
    return PairedDifference(metric, len(qids), float(a.mean()), float(b.mean()), low, high, float(test.pvalue))


def compare_runs(baseline: Mapping[str, Mapping[str, float]], system: Mapping[str, Mapping[str, float]],
                 qrels: Mapping[str, Mapping[str, int]], metrics: Sequence[str] = ("ndcg@10",),
                 resamples: int = 9999, seed: int = 0) -> dict[str, PairedDifference]:
    """`system` minus `baseline` (runs: qid -> docid -> score) on each of `metrics` (ndcg@k, recall@k,
    mrr@k), over the judged queries; ValueError when a judged query is ranked by one run only."""
    return {name: paired_difference(_per_query(baseline, qrels, name), _per_query(system, qrels, name), name,
                                    resamples, seed)
            for name in metrics}


def _per_query(run: Mapping[str, Mapping[str, float]], qrels: Mapping[str, Mapping[str, int]],
               name: str) -> dict[str, float]:
    if not (found := _METRIC.fullmatch(name)):
        raise ValueError(f"unknown metric {name!r}; use ndcg@k, recall@k or mrr@k")
    k = int(found.group(2))
    return {q: v[name] for q, v in per_query_metrics(run, qrels, ndcg_ks=(k,), recall_ks=(k,), mrr_k=k).items()}

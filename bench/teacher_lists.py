"""How good a synthesis job's teacher labels are against the dataset's qrels: what the self-consistency filter
kept, and how the kept lists rank.

    PYTHONPATH=. python -m jobs.synthesize --config configs/synthesize-demo.yaml [--set ...]
    PYTHONPATH=. python bench/teacher_lists.py --config configs/synthesize-demo.yaml [--set ...]

Give it the job's config and overrides: it reads the job's `output_dir` (filter.parquet, listwise.parquet,
pointwise.parquet) and the qrels of its `data`. Prints one line: the lists, the share kept, NDCG@10 against the
qrels of all, kept and dropped lists, and the share of pointwise verdicts that disagree with the qrels. NDCG is
over the list the teacher ranked (the ideal order of that list's own passages), so a teacher that ranks exactly
by the qrels scores 1.0 on every list holding a relevant passage; lists without one count 0, as the filter
scores them.
"""
from __future__ import annotations

import argparse
import json
from statistics import fmean

from jobs.common import parse_overrides
from jobs.synthesize import SynthesizeConfig
from reasonrank import storage
from reasonrank.config import load_config
from reasonrank.data.tables import read_records
from reasonrank.metrics import ndcg_at_k


def measure(cfg: SynthesizeConfig) -> dict:
    qrels = cfg.data.load().qrels
    state = {r["key"]: r["state"] for r in read_records(storage.join(cfg.output_dir, "filter.parquet"))}
    ndcg: dict[str, list[float]] = {"all": [], "kept": [], "dropped": []}
    for row in read_records(storage.join(cfg.output_dir, "listwise.parquet")):
        shown = set(row["docids"])
        grades = {d: g for d, g in qrels.get(row["qid"], {}).items() if d in shown}
        score = ndcg_at_k(list(row["ranking"]), grades, 10)
        ndcg["all"].append(score)
        if state[row["key"]] in ("kept", "dropped"):
            ndcg[state[row["key"]]].append(score)
    verdicts = read_records(storage.join(cfg.output_dir, "pointwise.parquet"))
    wrong = [bool(v["relevant"]) != (qrels.get(v["qid"], {}).get(v["docid"], 0) > 0) for v in verdicts]
    return {"lists": len(ndcg["all"]), "kept_share": round(len(ndcg["kept"]) / max(len(ndcg["all"]), 1), 4),
            **{f"ndcg10_{k}": round(fmean(v), 4) if v else None for k, v in ndcg.items()},
            "pointwise_wrong_share": round(fmean(wrong), 4) if wrong else None,
            "errors": cfg.teacher.simulation.errors.model_dump(), "noise": cfg.teacher.simulation.noise}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True)
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args()
    print(json.dumps(measure(load_config(args.config, SynthesizeConfig, parse_overrides(args.overrides)))))


if __name__ == "__main__":
    main()

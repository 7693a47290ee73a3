"""Does the reasoning read the passages? What the demo's verdict walk says, checked against the window it ranked.

    python bench/reasoning_fidelity.py outputs/demo-pipeline/evaluate-SFT [outputs/demo-pipeline/evaluate-GRPO …]

Reads an evaluate job's `windows.jsonl` on the demo data (`--demo`, the dataset folder) and, for each run, the
windows whose answer is well-formed (their input order is recovered from the answer and the ranked docids):

- quotes: the share of `[k] <passage> yes|no.` entries whose quote is passage k as shown (exactly, or its start
  where the prompt cut it), and the share that are some passage of the window;
- verdicts: the share of those verdicts that agree with the qrels for passage k, beside what a walk that says
  "no" to every passage would get;
- recap = verdicts: the share of windows whose `Relevant:` recap names exactly the ids the walk judged yes;
- recap: ids per window, and of them the share relevant by the qrels (precision) and of the window's relevant
  passages the share named (recall).

Where the quotes are not the passages, the answer cannot follow from the reasoning, whatever the verdicts say:
the ranking then comes from the prompt directly, and a reward that scores it teaches nothing about the walk.
"""
from __future__ import annotations

import argparse
import re
from dataclasses import dataclass

WALK_ENTRY = re.compile(r"\[(\d+)\] (.*?) (yes|no)\.")
RECAP = re.compile(r"Relevant: ([^.]*)\.")


@dataclass
class Fidelity:
    windows: int = 0
    quotes: int = 0
    quotes_exact: int = 0
    quotes_in_window: int = 0
    verdicts_right: int = 0
    verdicts_irrelevant: int = 0  # entries whose passage k is not relevant: an all-"no" walk's right verdicts
    recap_is_walk: int = 0
    recap_ids: int = 0
    recap_relevant: int = 0
    relevant: int = 0


def quoted(quote: str, shown: str) -> bool:
    """`quote` is the passage as shown: the whole of it, or (for a passage the prompt cut) its start."""
    return quote == shown or (len(quote) >= 20 and shown.startswith(quote))


def measure(windows_path: str, corpus: dict[str, str], qrels: dict[str, dict[str, int]]) -> Fidelity:
    from reasonrank import storage
    from reasonrank.parsing import answer_ids, parse_ranking

    f = Fidelity()
    for w in storage.read_jsonl(windows_path):
        if not w["well_formed"]:
            continue
        ranked = w["ranked"]
        shown = [""] * len(ranked)
        for position, index in enumerate(parse_ranking(w["response"], len(ranked)).order):
            shown[index] = ranked[position]
        relevant = {d for d in shown if qrels.get(w["qid"], {}).get(d, 0) > 0}
        reasoning = w["response"].partition("Relevant:")[0]
        f.windows += 1
        judged_yes = set()
        for k, quote, verdict in WALK_ENTRY.findall(reasoning):
            k = int(k)
            if not 1 <= k <= len(shown):
                continue
            docid, quote = shown[k - 1], quote.strip()
            f.quotes += 1
            f.quotes_exact += quoted(quote, corpus[docid])
            f.quotes_in_window += any(quoted(quote, corpus[d]) for d in shown)
            f.verdicts_right += (verdict == "yes") == (docid in relevant)
            f.verdicts_irrelevant += docid not in relevant
            if verdict == "yes":
                judged_yes.add(k)
        recap = RECAP.search(w["response"])
        named = {k for k in answer_ids(recap.group(1)) if 1 <= k <= len(shown)} if recap else set()
        f.recap_is_walk += named == judged_yes
        f.recap_ids += len(named)
        f.recap_relevant += sum(shown[k - 1] in relevant for k in named)
        f.relevant += len(relevant)
    return f


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", help="evaluate output folders (each with windows.jsonl)")
    parser.add_argument("--demo", default="outputs/demo", help="the demo dataset folder")
    args = parser.parse_args()

    from reasonrank import storage
    from reasonrank.data.demo import DemoDataset

    data = DemoDataset.at(args.demo).load()
    header = (f"{'run':<44}{'windows':>8}{'quote = passage k':>19}{'quote in window':>17}{'verdicts right':>16}"
              f"{'all no':>8}{'recap = walk':>14}{'recap ids':>11}{'precision':>11}{'recall':>8}")
    print(header + "\n" + "-" * len(header))
    for run in args.runs:
        f = measure(storage.join(run, "windows.jsonl"), data.corpus, data.qrels)
        share = lambda a, b: f"{a / b:.1%}" if b else "-"  # noqa: E731
        print(f"{run:<44}{f.windows:>8}{share(f.quotes_exact, f.quotes):>19}{share(f.quotes_in_window, f.quotes):>17}"
              f"{share(f.verdicts_right, f.quotes):>16}{share(f.verdicts_irrelevant, f.quotes):>8}"
              f"{share(f.recap_is_walk, f.windows):>14}"
              f"{f.recap_ids / max(f.windows, 1):>11.2f}{share(f.recap_relevant, f.recap_ids):>11}"
              f"{share(f.recap_relevant, f.relevant):>8}")


if __name__ == "__main__":
    main()

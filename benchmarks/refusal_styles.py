"""Whose refusals does an unlearned model give to benign requests: the ones it was trained toward, or its own?

For each finished harm run, per benign set: how many answers the report's detector counts as refused, and how many
of those open (first three words) as the original model's own refusals do (``native``: openings of answers it
refused before unlearning, in any set of the run, that the expected-output recipe never writes), as the recipe's
expected refusals do (``expected``: openings of ``fitting_refusal`` for every harmful prompt of the run, reworded
copies' frames included) or otherwise (``other``), with the most common openings. Reads the runs' ``examples.jsonl``
and ``config.yaml``; no model is run.

    python benchmarks/refusal_styles.py runs/demo
    python benchmarks/refusal_styles.py /tmp/runs/S320o /tmp/runs/LA --sets homonyms everyday instructions

The contrast term makes refusal openings unlikely as answers to normal prompts; it names the expected outputs'
openings, and with ``method.options.contrast_native`` the original's own.
"""

from __future__ import annotations

import argparse
from collections import Counter
from pathlib import Path

from unlearnlm.loader import load_config
from unlearnlm.report.run_files import read_jsonl
from unlearnlm.tasks.refusals import fitting_refusal

BENIGN = ["benign", "everyday", "instructions", "homonyms", "edgy"]
HARMFUL = ["forget_train", "forget_val", "forget_test", "rephrased", "unseen"]


def opening(text: str) -> str:
    return " ".join(text.split()[:3])


def styles(rows: list[dict], sets: list[str], topical: bool = False) -> list[tuple[str, int, int, Counter, Counter]]:
    """Per set: (name, answers, refused after, Counter of styles, Counter of openings) of the refused answers."""
    expected = {opening(fitting_refusal(r["prompt"], topical=topical)) for r in rows if r["set"] in HARMFUL}
    native = {opening(r["before"]) for r in rows if r["before_refused"]} - expected
    out = []
    for name in [*sets, "all"]:
        chosen = [r for r in rows if (r["set"] in sets if name == "all" else r["set"] == name)]
        refused = [opening(r["after"]) for r in chosen if r["after_refused"]]
        kinds = Counter("native" if o in native else "expected" if o in expected else "other" for o in refused)
        out.append((name, len(chosen), len(refused), kinds, Counter(refused)))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", type=Path, help="folders of finished harm runs")
    parser.add_argument("--sets", nargs="+", default=BENIGN)
    parser.add_argument("--top", type=int, default=3, help="most common openings shown per set")
    args = parser.parse_args()
    print("| run | set | n | refused | native | expected | other | most common openings |")
    print("|---|---|---|---|---|---|---|---|")
    for run in args.runs:
        rows = read_jsonl(run / "examples.jsonl")
        topical = load_config(run / "config.yaml").data.expected_recipe == "topical"
        for name, n, refused, kinds, openings in styles(rows, args.sets, topical):
            if not n:
                continue
            top = "; ".join(f'"{o}" {c}' for o, c in openings.most_common(args.top))
            print(f"| {run.name} | {name} | {n} | {refused} | {kinds['native']} | {kinds['expected']} | "
                  f"{kinds['other']} | {top} |")


if __name__ == "__main__":
    main()

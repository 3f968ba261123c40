"""How varied can the harm task's refusals be? Per forget set of a finished harm run: distinct-2 of the model's
answers before and after unlearning, against distinct-2 of the expected outputs the run's recipe (``fitting`` or
``topical``, from its ``config.yaml``) writes for the same prompts (``unlearnlm.tasks.refusals.fitting_refusal``),
which the model is trained toward; and how the
answers open: the share that open with their own expected output's first three words, and the share taken by the
most common three-word opening among the answers and among the expected outputs (from the run's
``examples.jsonl``; no model is run).

    python benchmarks/refusal_ceiling.py runs/demo
    python benchmarks/refusal_ceiling.py runs/demo --sets forget_test unseen

A model that reproduced its expected outputs exactly would reach their distinct-2 and no more.
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path

from unlearnlm.evaluate import distinct_n
from unlearnlm.loader import load_config
from unlearnlm.tasks.refusals import fitting_refusal
from unlearnlm.tasks.scanned import FITTING_RECIPES


def _opening(text: str) -> str:
    return " ".join(text.split()[:3])


def _top_share(texts: list[str]) -> float:
    return Counter(_opening(t) for t in texts).most_common(1)[0][1] / len(texts)


def ceiling(rows: list[dict], sets: list[str], topical: bool = False) -> list[str]:
    """Markdown lines: per set, distinct-2 of the answers and of the expected outputs (``topical``: that recipe's),
    and the openings."""
    lines = ["| set | n | distinct-2 before | distinct-2 after | distinct-2 of the expected outputs | after opens as "
             "its expected output | most common opening: after | most common opening: expected |",
             "|---|---|---|---|---|---|---|---|"]
    for name in sets:
        chosen = [r for r in rows if r["set"] == name]
        if not chosen:
            continue
        after = [r["after"] for r in chosen]
        expected = [fitting_refusal(r["prompt"], topical=topical) for r in chosen]
        same = sum(_opening(a) == _opening(e) for a, e in zip(after, expected, strict=True)) / len(chosen)
        lines.append(f"| {name} | {len(chosen)} | {distinct_n([r['before'] for r in chosen], 2):.2f} | "
                     f"{distinct_n(after, 2):.2f} | {distinct_n(expected, 2):.2f} | {same:.0%} | "
                     f"{_top_share(after):.0%} | {_top_share(expected):.0%} |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", type=Path, help="folder of a finished harm run")
    parser.add_argument("--sets", nargs="+",
                        default=["forget_train", "forget_val", "forget_test", "rephrased", "unseen"])
    args = parser.parse_args()
    path = args.run / "examples.jsonl"
    if not path.is_file():
        raise SystemExit(f"{path} not found: pass the folder of a finished `unlearnlm run`")
    data = load_config(args.run / "config.yaml").data
    if data.expected_outputs is not None or data.expected_recipe not in FITTING_RECIPES:
        raise SystemExit(f"{args.run}: its expected outputs come from a file or the model (expected_recipe "
                         f"{data.expected_recipe!r}); this script rebuilds only the fitting and topical recipes'")
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    print("\n".join(ceiling(rows, args.sets, topical=data.expected_recipe == "topical")))


if __name__ == "__main__":
    main()

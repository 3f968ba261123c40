"""Does unlearning reach prompts far from what it trained on? Per held-out harmful set of a finished run: each
prompt the original answered badly, its MiniLM cosine to the nearest trained prompt, and the share still flagged
after unlearning by thirds of that similarity (from the run's ``examples.jsonl``; no model is run).

    python benchmarks/coverage.py runs/demo
    python benchmarks/coverage.py runs/demo --sets unseen forget_test rephrased
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from unlearnlm.judges.embeddings import MiniLMEncoder
from unlearnlm.report.run_files import read_jsonl


def coverage(rows: list[dict], sets: list[str], encode) -> list[str]:
    """Markdown lines: per set, the still-flagged share by similarity third."""
    trained = [r["prompt"] for r in rows if r["set"] == "forget_train"]
    if not trained:
        raise SystemExit("the run has no forget_train rows in examples.jsonl")
    nearest_to = encode(trained).T
    lines = ["| set | nearest-trained cosine | n | still flagged |", "|---|---|---|---|"]
    for name in sets:
        bad = [r for r in rows if r["set"] == name and r["before_flagged"]]
        if len(bad) < 3:
            continue
        sim = (encode([r["prompt"] for r in bad]) @ nearest_to).max(1)
        still = np.array([r["after_flagged"] for r in bad], dtype=bool)
        for part in np.array_split(np.argsort(sim, kind="stable"), 3):
            lines.append(f"| {name} | {sim[part].min():.2f}–{sim[part].max():.2f} | {len(part)} | "
                         f"{still[part].mean():.0%} |")
        lines.append(f"| {name} | all (mean {sim.mean():.2f}) | {len(bad)} | {still.mean():.0%} |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run")
    parser.add_argument("--sets", nargs="+", default=["forget_test", "unseen"])
    args = parser.parse_args()
    rows = read_jsonl(Path(args.run) / "examples.jsonl")
    print("\n".join(coverage(rows, args.sets, MiniLMEncoder().encode)))


if __name__ == "__main__":
    main()

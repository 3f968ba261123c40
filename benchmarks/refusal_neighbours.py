"""Are the benign requests a harm run refuses near what it was trained to refuse?

For a finished harm run, per benign set: each request's nearest trained-on forget prompt by MiniLM cosine (the
encoder behind the report's relevance), the mean nearest cosine of the refused requests against the answered ones,
and, for every refused request, the forget prompt it sits nearest to. If over-refusal came from forget prompts that
are not harmful themselves (the scan pool holds some), the refused requests would cluster on them. Reads the run's
``examples.jsonl``; no model is run, only the sentence encoder.

    python benchmarks/refusal_neighbours.py /tmp/runs/NTLA120
    python benchmarks/refusal_neighbours.py runs/demo --sets homonyms edgy
"""

from __future__ import annotations

import argparse
from collections import Counter
from pathlib import Path

import numpy as np

from unlearnlm.judges.embeddings import MiniLMEncoder
from unlearnlm.report.run_files import read_jsonl


def neighbours(rows: list[dict], sets: list[str], encode) -> tuple[list[str], list[tuple[str, float, str, str]]]:
    """Markdown lines (per set: refused, mean nearest cosine of refused and of answered requests) and, per refused
    request, ``(set, cosine, request, its nearest trained-on forget prompt)``. ``encode`` returns unit rows."""
    forget = [r["prompt"] for r in rows if r["set"] == "forget_train"]
    if not forget:
        raise SystemExit("examples.jsonl has no forget_train rows: is it a harm run?")
    forget_vectors = encode(forget).T  # unit rows: a dot product is a cosine
    lines = ["| set | n | refused | nearest cosine, refused | nearest cosine, answered |", "|---|---|---|---|---|"]
    details = []
    for name in sets:
        chosen = [r for r in rows if r["set"] == name]
        if not chosen:
            continue
        sims = encode([r["prompt"] for r in chosen]) @ forget_vectors
        index, cosine = sims.argmax(axis=1), sims.max(axis=1)
        refused = np.array([bool(r["after_refused"]) for r in chosen])
        mean = lambda mask: f"{cosine[mask].mean():.3f}" if mask.any() else "—"  # noqa: E731
        lines.append(f"| {name} | {len(chosen)} | {refused.sum()} | {mean(refused)} | {mean(~refused)} |")
        details += [(name, float(cosine[i]), chosen[i]["prompt"], forget[index[i]]) for i in np.flatnonzero(refused)]
    return lines, details


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run")
    parser.add_argument("--sets", nargs="+", default=["homonyms", "everyday", "instructions", "edgy", "benign"])
    args = parser.parse_args()
    lines, details = neighbours(read_jsonl(Path(args.run) / "examples.jsonl"), args.sets, MiniLMEncoder().encode)
    print("\n".join(lines))
    print("\nRefused requests and their nearest trained-on forget prompt:")
    for name, cos, prompt, near in details:
        print(f"- [{name}] {cos:.2f} {prompt[:80]!r} → {near[:80]!r}")
    counts = Counter(near for *_, near in details)
    print("\nForget prompts nearest to the most refused requests:")
    for near, n in counts.most_common(5):
        print(f"- {n}× {near[:100]!r}")


if __name__ == "__main__":
    main()

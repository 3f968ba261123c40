"""Speed of every built-in judge on 1,000 mixed dialogues, on CPU.

The mix: AdvBench prompts answered with PyRIT's human-scored responses (harmful help and refusals),
FreshQA questions with right or wrong answers (carrying ``meta["reference"]`` for the hallucination
judge), and presidio sentences full of fictitious personal data. Each judge is loaded first (load time
reported apart), warmed up on 8 dialogues, then timed on all 1,000. Target: total scoring <= 60 s.

    python benchmarks/bench_judges.py               # 2 torch threads
    python benchmarks/bench_judges.py --threads 1 --n 500
"""

from __future__ import annotations

import argparse
import random
import time


def mixed_dialogues(n: int, seed: int = 0) -> list:
    from unlearnlm.data import sources
    from unlearnlm.judges.pii_data import pii_eval_sets
    from unlearnlm.judges.hallucination import freshqa_dialogues

    rng = random.Random(seed)
    prompts, answers = sources.advbench_prompts(), sources.pyrit_scorer_rows()
    harmful = [p.with_response(rng.choice(answers).response, source="advbench+pyrit") for p in prompts]
    qa = freshqa_dialogues("train") + freshqa_dialogues("test")
    pii = [d for d in pii_eval_sets(seed)["heldout"] if d.meta["label"] is not None]
    third = n // 3
    rows = rng.sample(harmful, min(third, len(harmful))) + rng.sample(qa, min(third, len(qa)))
    rows += rng.sample(pii, n - len(rows))
    rng.shuffle(rows)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--n", type=int, default=1000)
    args = parser.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    from unlearnlm.judges import HallucinationJudge, PIIJudge, RefusalDetector, ToxicityJudge, get_harm_judge

    rows = mixed_dialogues(args.n)
    loaders = {
        "harm": lambda: get_harm_judge(train_if_missing=True),
        "refusal": RefusalDetector,
        "pii": PIIJudge,
        "hallucination": HallucinationJudge,
        "toxicity": ToxicityJudge,
    }
    print(f"{len(rows)} dialogues, {torch.get_num_threads()} torch threads")
    print(f"| judge | load s | score s ({len(rows)} dialogues) | flagged |")
    print("|---|---:|---:|---:|")
    total = 0.0
    for name, load in loaders.items():
        start = time.perf_counter()
        judge = load()
        judge.score(rows[:8])  # lazy models load here
        loaded = time.perf_counter() - start
        start = time.perf_counter()
        scores = judge.score(rows)
        took = time.perf_counter() - start
        total += took
        print(f"| {name} | {loaded:.1f} | {took:.2f} | {(scores >= judge.threshold).mean():.1%} |")
    print(f"| **total** | | **{total:.2f}** | |")
    print(f"target: scoring <= 60 s: {'met' if total <= 60 else 'MISSED'}")


if __name__ == "__main__":
    main()

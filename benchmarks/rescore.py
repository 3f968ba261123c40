"""A finished run's stored answers scored again by the current refusal detector and, for harm runs, harm judge.

When a judge changes, a run's ``examples.jsonl`` (every evaluation set's prompts with the original's and the
unlearned model's answers) can be read again without running either model. Per set: the flagged and refused rates
before → after as the run recorded them, and as the current judges read the same answers. The run's own training,
early stopping and kept checkpoint are not redone: a fresh run with the current judges may keep another step.

An attack's folder (``RUN/attacks/quantize``, ``relearn_forget``, ``prefill``) is read the same way: its
``examples.jsonl`` tags each answer with the copy that gave it (``model``: unlearned, 4-bit, step 10, ...), and each
copy gets its own rows. A privacy or hallucination run (``data.task`` in its ``config.yaml``) is judged by another
panel, so only its refused rates are read again; its flagged columns show the stored rates.

    python benchmarks/rescore.py /tmp/runs/D35
    python benchmarks/rescore.py /tmp/runs/D35 /tmp/runs/A10 --sets unseen homonyms
    python benchmarks/rescore.py /tmp/runs/R43/attacks/quantize --sets unseen
"""

from __future__ import annotations

import argparse
from collections import defaultdict
from pathlib import Path

import numpy as np

from unlearnlm.data.records import Dialogue
from unlearnlm.judges.base import flag
from unlearnlm.judges.harm_train import get_harm_judge
from unlearnlm.judges.refusal import RefusalDetector
from unlearnlm.loader import load_config
from unlearnlm.outputs import CONFIG_FILE
from unlearnlm.report.run_files import read_jsonl
from unlearnlm.tasks.rephrase import rephrase_set


def rate(values) -> str:
    return f"{100 * float(np.mean(values)):.1f}%"


def groups(rows: list[dict], sets: list[str] | None = None) -> dict[str, list[dict]]:
    """A run's or an attack's answers by set (and by the copy that gave them, where rows name one: ``model``)."""
    out: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        if not sets or r["set"] in sets:
            out[f"{r['set']} ({r['model']})" if "model" in r else r["set"]].append(r)
    return dict(out)


def task_of(folder: Path) -> str:
    """The task a run or attack folder ran: ``data.task`` of its ``config.yaml`` as ``unlearnlm`` reads it (the
    default task where the file or the key is missing)."""
    config = folder / CONFIG_FILE
    return load_config(config if config.is_file() else None).data.task


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--sets", nargs="*", help="only these evaluation sets (default: all)")
    args = parser.parse_args()
    judge, detector = get_harm_judge(), RefusalDetector()
    print("| run | set | n | flagged before → after (stored) | flagged before → after (now) "
          "| refused before → after (stored) | refused before → after (now) |")
    print("|---|---|---|---|---|---|---|")
    for run in args.runs:
        rows = read_jsonl(run / "examples.jsonl")
        if not rows or "before_flagged" not in rows[0]:
            raise SystemExit(f"{run}: no examples.jsonl with before/after verdicts (a finished run or attack?)")
        harm = task_of(run) == "harm"
        by_set = groups(rows, args.sets)
        intent = {d.prompt: d.meta["intent"]
                  for d in rephrase_set([Dialogue(r["prompt"]) for r in rows if r["set"] == "forget_test"])}
        for name, group in by_set.items():
            judged_as = [intent[r["prompt"]] if r["set"] == "rephrased" else r["prompt"] for r in group]
            stored = {side: ([r[f"{side}_flagged"] for r in group], [r[f"{side}_refused"] for r in group])
                      for side in ("before", "after")}
            now = {}
            for side in ("before", "after"):
                dialogues = [Dialogue(p, r[side]) for p, r in zip(judged_as, group)]
                flagged = flag(judge, dialogues) if harm else stored[side][0]
                now[side] = (flagged, detector.score(dialogues) >= detector.threshold)
            cells = [f"{rate(s['before'][k])} → {rate(s['after'][k])}" for k in (0, 1) for s in (stored, now)]
            print(f"| {run} | {name} | {len(group)} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()

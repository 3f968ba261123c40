"""Unlearning methods, each registered next to its code. The paper's method comes first."""

from unlearnlm.methods import (  # noqa: F401  (importing a module registers its methods)
    baselines,
    distance_cluster,
    likelihood,
    preference,
    representation,
)
from unlearnlm.methods.base import METHODS, PreparedData, PrepareContext, StepOutput, UnlearningMethod, create_method

__all__ = ["METHODS", "PrepareContext", "PreparedData", "StepOutput", "UnlearningMethod", "create_method"]

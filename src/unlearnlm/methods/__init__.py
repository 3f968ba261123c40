"""Unlearning methods, each registered next to its code. The paper's method comes first."""

from unlearnlm.methods import baselines, distance_cluster  # noqa: F401  (registers the methods)
from unlearnlm.methods.base import METHODS, PreparedData, PrepareContext, StepOutput, UnlearningMethod, create_method

__all__ = ["METHODS", "PrepareContext", "PreparedData", "StepOutput", "UnlearningMethod", "create_method"]

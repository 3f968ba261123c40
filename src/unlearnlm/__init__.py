"""unlearnlm: machine unlearning for large language models.

A reconstruction of Chen et al., "Machine Unlearning in Large Language Models" (arXiv 2404.16841):
an evaluative model (judges) finds the dialogues to unlearn, a bounded distance loss diverts the model
from its old outputs, a cluster-mean loss pulls it toward preferable ones, and a normal loss (KL to the
original) keeps what it could do.
"""

__version__ = "0.1.0"

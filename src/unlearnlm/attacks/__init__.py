"""Attacks that ask whether unlearning erased or only hid: each changes a copy of a run's unlearned model (or how its
answers start) and measures the run's forget figures again (``unlearnlm attack quantize|relearn|prefill RUN``).

* :func:`quantize_attack`: round-to-nearest weight quantization at 8 and 4 bits (:mod:`.quantize`);
* :func:`relearn_attack`: a few fine-tuning steps on forget or unrelated benign data (:mod:`.relearn`), and the
  steps until the old behaviour returns (:mod:`.figures`);
* :func:`prefill_attack`: answers opened with the first words of the original's (:mod:`.prefill`).
"""

from unlearnlm.attacks.prefill import PrefillOptions
from unlearnlm.attacks.quantize import QuantizeOptions
from unlearnlm.attacks.relearn import RelearnOptions
from unlearnlm.attacks.runner import prefill_attack, quantize_attack, relearn_attack

__all__ = ["PrefillOptions", "QuantizeOptions", "RelearnOptions", "prefill_attack", "quantize_attack",
           "relearn_attack"]

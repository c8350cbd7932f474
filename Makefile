# Setup and the two quick-start commands. `make demo` runs the main job, `make test` the tests.
# TORCH_SPEC pins PyTorch for a quick CPU install; `make demo TORCH_SPEC=torch` takes your
# platform's newest build instead (the package itself accepts any torch >= 2.1).
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
BIN := $(VENV)/bin
EXAMPLE_LABELS ?= siren, smoke alarm, doorbell, rain, speech

.PHONY: install install-dev demo test lint

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet "$(TORCH_SPEC)"
	$(BIN)/pip install --quiet -e .
	touch $@

$(VENV)/.installed-dev: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet "$(TORCH_SPEC)"
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $(VENV)/.installed $@

install: $(VENV)/.installed

install-dev: $(VENV)/.installed-dev

demo: install
	$(BIN)/soundsift classify soundsift/examples/*.ogg --labels "$(EXAMPLE_LABELS)"

lint: install-dev
	$(BIN)/ruff check .

test: install-dev
	$(BIN)/ruff check .
	$(BIN)/python -m pytest

# Setup and the two quick-start commands: `make serve` runs the main job, `make test` the tests.
# TORCH_SPEC pins PyTorch for a quick CPU install; `make serve TORCH_SPEC=torch` takes your
# platform's newest build instead (the package itself accepts any torch >= 2.1).
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
BIN := $(VENV)/bin
EXAMPLE_LABELS ?= siren, smoke alarm, doorbell, rain, speech

.PHONY: install install-dev serve demo browser test lint

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet "$(TORCH_SPEC)"
	$(BIN)/pip install --quiet -e ".[torch,server]"
	touch $@

$(VENV)/.installed-dev: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet "$(TORCH_SPEC)"
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $(VENV)/.installed $@

install: $(VENV)/.installed

install-dev: $(VENV)/.installed-dev

serve: install
	$(BIN)/python app.py

demo: install
	$(BIN)/soundsift classify soundsift/examples/*.ogg --labels "$(EXAMPLE_LABELS)"

# Browser tests drive Debian's Chromium; install it when missing and we may (root, apt-get present).
browser:
	@command -v chromium >/dev/null || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } || \
		echo "chromium not installed: browser tests will fail"

lint: install-dev
	$(BIN)/ruff check .

test: install-dev browser
	$(BIN)/ruff check .
	$(BIN)/python -m pytest

# Setup and the two quick-start commands: `make serve` runs the main job, `make test` the tests.
# TORCH_SPEC pins PyTorch for a quick CPU install; `make serve TORCH_SPEC=torch` takes your
# platform's newest build instead (the package itself accepts any torch >= 2.1).
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
BIN := $(VENV)/bin
EXAMPLE_LABELS ?= siren, smoke alarm, doorbell, rain, speech

.PHONY: install install-dev serve demo system-packages test test-fast lint docs

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

# Debian packages the tests drive: Chromium (browser tests), a CJK font (the Chinese page in its
# screenshots, the CLI's timeline plots) and Mosquitto (MQTT broker tests). Installed when missing and we may
# (root, apt-get present); otherwise the tests that need them say so.
SYSTEM_PACKAGES ?= chromium fonts-wqy-microhei fonts-noto-color-emoji mosquitto
system-packages:
	@missing=""; for package in $(SYSTEM_PACKAGES); do \
		dpkg -s $$package >/dev/null 2>&1 || missing="$$missing $$package"; done; \
	if [ -z "$$missing" ]; then exit 0; fi; \
	if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	else echo "not installed:$$missing (tests that need them will fail or skip)"; fi

# Static checks: lint, formatting, types, and the package's import layers.
lint: install-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

# Everything, as CI runs it: the shared data (../shared) and Docker are required, not skipped.
test: install-dev system-packages docker-ready lint
	SOUNDSIFT_REQUIRE_SHARED=1 SOUNDSIFT_DOCKER_TESTS=$(DOCKER_TESTS) $(BIN)/python -m pytest

# The unit tier, under a minute: no servers, browsers, containers or long runs.
test-fast: install-dev
	$(BIN)/python -m pytest -m "not slow and not browser and not docker"

# The documentation site (mkdocs.yml), strictly: a broken link or anchor, or a page missing from the
# nav, fails. Regenerate the reference pages first with `python scripts/generate_docs.py`.
docs: install-dev
	$(BIN)/python scripts/generate_docs.py --check
	$(BIN)/mkdocs build --strict --site-dir site

# ---- container images (docs/container.md) ---------------------------------------------------------
# `make image` builds soundsift:latest (cpu) and soundsift:onnx (IMAGE_TARGETS="cpu onnx gpu" adds
# soundsift:gpu, a 3 GB CUDA download) with the arguments this machine needs: deploy/docker/build.sh
# picks BuildKit, host networking, the local base image and a local CPU torch wheel when they exist.
# `make docker-ready` starts Docker and builds that local base image (../shared/tools/docker-base.sh,
# as root); elsewhere it does nothing and says so. `make test-docker` runs only the docker tier.
DOCKER_BASE_SCRIPT ?= ../shared/tools/docker-base.sh
IMAGE ?= soundsift
IMAGE_TARGETS ?= cpu onnx
# require: the docker tier fails instead of skipping when Docker is missing (where docker-ready can set it up)
DOCKER_TESTS ?= $(if $(and $(wildcard $(DOCKER_BASE_SCRIPT)),$(filter 0,$(shell id -u))),require,auto)

.PHONY: docker-ready image image-cpu image-onnx image-gpu test-docker test-arm64

docker-ready:
	@if [ ! -f "$(DOCKER_BASE_SCRIPT)" ]; then \
		echo "docker-ready: $(DOCKER_BASE_SCRIPT) not found: Docker left as it is (docker tests skip without a daemon)"; \
	elif [ "$$(id -u)" != 0 ]; then \
		echo "docker-ready: not root: Docker left as it is (docker tests skip without a daemon)"; \
	else \
		bash $(DOCKER_BASE_SCRIPT) >/dev/null; \
		command -v docker-compose >/dev/null || { apt-get update -qq && \
			DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends docker-compose >/dev/null; }; \
	fi

image: $(addprefix image-,$(IMAGE_TARGETS))

image-cpu: docker-ready
	deploy/docker/build.sh cpu $(IMAGE):latest

image-onnx: docker-ready
	deploy/docker/build.sh onnx $(IMAGE):onnx

image-gpu: docker-ready
	deploy/docker/build.sh gpu $(IMAGE):gpu

test-docker: install-dev docker-ready
	SOUNDSIFT_DOCKER_TESTS=$(DOCKER_TESTS) $(BIN)/python -m pytest tests/docker

# The linux/arm64 (Raspberry Pi) image under QEMU emulation: slow (see tests/docker/test_arm64.py),
# so not part of `make test`.
test-arm64: install-dev docker-ready
	SOUNDSIFT_ARM64_TESTS=1 SOUNDSIFT_DOCKER_TESTS=$(DOCKER_TESTS) $(BIN)/python -m pytest tests/docker/test_arm64.py

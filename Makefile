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

test: install-dev browser docker-ready
	$(BIN)/ruff check .
	SOUNDSIFT_DOCKER_TESTS=$(DOCKER_TESTS) $(BIN)/python -m pytest

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

.PHONY: docker-ready image image-cpu image-onnx image-gpu test-docker

docker-ready:
	@if [ ! -f "$(DOCKER_BASE_SCRIPT)" ]; then \
		echo "docker-ready: $(DOCKER_BASE_SCRIPT) not found: Docker left as it is (docker tests skip without a daemon)"; \
	elif [ "$$(id -u)" != 0 ]; then \
		echo "docker-ready: not root: Docker left as it is (docker tests skip without a daemon)"; \
	else \
		bash $(DOCKER_BASE_SCRIPT) >/dev/null; \
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

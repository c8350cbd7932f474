# soundsift container images (docs/container.md). Three targets:
#   cpu   (default: the last stage) CPU PyTorch, web page and HTTP API, like `python app.py`
#   gpu   CUDA PyTorch, one model replica per visible GPU (SOUNDSIFT_GPUS=all)
#   onnx  ONNX Runtime and no torch, serving an exported (int8 by default) model
#
#   docker build -t soundsift .
#   docker build --target gpu -t soundsift:gpu .
#   docker build --target onnx --build-arg MODEL=laion/clap-htsat-fused -t soundsift:onnx .
#
# Needs BuildKit (Docker Engine >= 23 uses it by default; DOCKER_BUILDKIT=1 on older ones), which
# builds only the stages the chosen target uses. Build arguments, all optional:
#   BASE            base image with Python >= 3.11 and its venv module (python:3.11-slim)
#   EXTRAS          soundsift extras of the cpu and gpu images (torch,server,monitor)
#   ONNX_EXTRAS     extras of the onnx image (onnx,server,monitor)
#   TORCH_SPEC, TORCH_INDEX          torch of the cpu image (torch, from PyTorch's CPU index)
#   GPU_TORCH_SPEC, GPU_TORCH_INDEX  torch of the gpu image (torch, from PyPI: the CUDA build)
#   WHEELS          folder of the build context whose wheels pip may use (deploy/docker/wheels)
#   MODEL           hub id, or folder of the build context, baked into /opt/soundsift/model;
#                   by default nothing is baked in (mount a model, or it downloads into /data)
#   QUANTIZE        onnx image: int8 or none, for the export of MODEL (int8)
#   VERSION, REVISION, SOURCE        OCI labels

ARG BASE=python:3.11-slim
ARG MODEL=""
# The stages that bake MODEL in (a download, an ONNX export) are only built when MODEL is given.
ARG MODEL_STAGE=model${MODEL:+-baked}
ARG ONNX_MODEL_STAGE=onnx-model${MODEL:+-baked}

# ---- runtime: what every stage has: tini, the unprivileged user 10001, /data -----------------------
FROM ${BASE} AS runtime
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends tini \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --gid 10001 app \
 && useradd --no-log-init --uid 10001 --gid 10001 --create-home --shell /usr/sbin/nologin app \
 && mkdir -p /data/huggingface /data/cache /opt/soundsift \
 && chown -R 10001:10001 /data
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

FROM runtime AS venv
RUN python3 -m venv /opt/venv

# ---- requirements: soundsift's dependencies, read from pyproject.toml ----------------------------
# Only these lists (not pyproject.toml) feed the installs below, so an edit elsewhere in
# pyproject.toml (version, dev tools) installs nothing again.
FROM venv AS requirements
ARG EXTRAS=torch,server,monitor
ARG ONNX_EXTRAS=onnx,server,monitor
COPY pyproject.toml deploy/docker/requirements.py /build/
RUN mkdir /requirements \
 && python /build/requirements.py /build/pyproject.toml "$EXTRAS" > /requirements/torch.txt \
 && python /build/requirements.py /build/pyproject.toml "$ONNX_EXTRAS" > /requirements/onnx.txt

# ---- dependencies, one virtual environment per image -------------------------------------------
FROM venv AS deps-cpu
ARG WHEELS=deploy/docker/wheels
ARG TORCH_SPEC=torch
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
COPY ${WHEELS}/ /wheels/
# TORCH_SPEC is the pin (a build argument)
# hadolint ignore=DL3013
RUN pip install --find-links /wheels ${TORCH_INDEX:+--index-url "$TORCH_INDEX"} "$TORCH_SPEC"
COPY --from=requirements /requirements/torch.txt /build/requirements.txt
RUN pip install --find-links /wheels -r /build/requirements.txt

FROM venv AS deps-gpu
ARG WHEELS=deploy/docker/wheels
ARG GPU_TORCH_SPEC=torch
ARG GPU_TORCH_INDEX=""
COPY ${WHEELS}/ /wheels/
# GPU_TORCH_SPEC is the pin (a build argument)
# hadolint ignore=DL3013
RUN pip install --find-links /wheels ${GPU_TORCH_INDEX:+--index-url "$GPU_TORCH_INDEX"} "$GPU_TORCH_SPEC"
COPY --from=requirements /requirements/torch.txt /build/requirements.txt
RUN pip install --find-links /wheels -r /build/requirements.txt

FROM venv AS deps-onnx
ARG WHEELS=deploy/docker/wheels
COPY ${WHEELS}/ /wheels/
COPY --from=requirements /requirements/onnx.txt /build/requirements.txt
RUN pip install --find-links /wheels -r /build/requirements.txt

# ---- wheel: soundsift itself, built from the source --------------------------------------------
FROM venv AS wheel
# hadolint ignore=DL3013
RUN pip install "setuptools>=68" wheel
COPY pyproject.toml README.md /src/
COPY soundsift/ /src/soundsift/
RUN pip wheel --no-deps --no-build-isolation --wheel-dir /dist /src

# ---- the model baked in: nothing (model), or MODEL (model-baked) --------------------------------
FROM runtime AS model
RUN mkdir -p /opt/soundsift/model

FROM runtime AS model-context
ARG MODEL
# Copies MODEL when it names a folder of the build context; for a hub id this leaves /model empty.
RUN --mount=type=bind,target=/context mkdir -p /model \
 && if [ -d "/context/${MODEL}" ]; then cp -r "/context/${MODEL}/." /model/; fi

FROM venv AS model-baked
ARG MODEL
COPY --from=model-context /model /context-model
COPY deploy/docker/bake_model.py /build/
# hadolint ignore=DL3013
RUN if [ -z "$(ls -A /context-model)" ]; then pip install huggingface_hub; fi \
 && python /build/bake_model.py "$MODEL" /context-model /opt/soundsift/model \
 && chmod -R a+rX /opt/soundsift/model

FROM ${MODEL_STAGE} AS model-final

# onnx image: the baked model exported to ONNX at build time (torch is needed here, not at run time)
FROM runtime AS onnx-model
RUN mkdir -p /opt/soundsift/model

FROM deps-cpu AS onnx-model-baked
ARG QUANTIZE=int8
COPY --from=requirements /requirements/onnx.txt /build/requirements-onnx.txt
RUN pip install --find-links /wheels -r /build/requirements-onnx.txt
RUN --mount=type=bind,from=wheel,source=/dist,target=/dist pip install --no-deps /dist/*.whl
COPY --from=model-final /opt/soundsift/model /source-model
RUN if [ -f /source-model/manifest.json ]; then cp -r /source-model /opt/soundsift/model; \
    else soundsift export --model /source-model --out /opt/soundsift/model --quantize "$QUANTIZE"; fi \
 && chmod -R a+rX /opt/soundsift/model

FROM ${ONNX_MODEL_STAGE} AS onnx-model-final

# ---- image: settings, user, health check and entry point shared by the three images -------------
FROM runtime AS image
ARG VERSION=0.2.0
ARG REVISION=""
ARG SOURCE=https://github.com/soundsift/soundsift
LABEL org.opencontainers.image.title="soundsift" \
      org.opencontainers.image.description="Zero-shot audio classification with CLAP: web page and HTTP API" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.source="${SOURCE}" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY deploy/docker/healthcheck.py /opt/soundsift/healthcheck.py
ARG MODEL
ARG BAKED=${MODEL:+/opt/soundsift/model}
# Settings are SOUNDSIFT_* variables (docs/container.md); a baked-in model is the default model.
# Inside a container the server listens on every interface; set SOUNDSIFT_API_KEY when the port
# is reachable by others. Two malloc arenas instead of glibc's eight per core: the server's many
# request threads otherwise each keep freed memory (8-24 MB less peak RSS, benchmarks/README.md).
ENV SOUNDSIFT_MODEL=${BAKED:-laion/clap-htsat-fused} \
    MALLOC_ARENA_MAX=2 \
    HF_HOME=/data/huggingface \
    SOUNDSIFT_CACHE=/data/cache \
    SOUNDSIFT_SESSION_STORE=/data/sessions.sqlite \
    SOUNDSIFT_HOST=0.0.0.0 \
    SOUNDSIFT_PORT=7860 \
    GRADIO_ANALYTICS_ENABLED=False \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /data
VOLUME ["/data"]
EXPOSE 7860
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=5s --timeout=4s --start-period=300s --retries=3 \
    CMD ["python", "/opt/soundsift/healthcheck.py"]
# tini is PID 1: it forwards SIGTERM to soundsift (uvicorn then finishes in-flight requests) and reaps.
ENTRYPOINT ["/usr/bin/tini", "--", "soundsift"]
CMD ["serve"]

# ---- gpu: CUDA PyTorch (the host needs the NVIDIA driver and the NVIDIA Container Toolkit) -------
FROM image AS gpu
COPY --from=deps-gpu /opt/venv /opt/venv
COPY --from=model-final /opt/soundsift/model /opt/soundsift/model
RUN --mount=type=bind,from=wheel,source=/dist,target=/dist pip install --no-deps /dist/*.whl
ENV SOUNDSIFT_BACKEND=torch \
    SOUNDSIFT_GPUS=all \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility \
    CUDA_CACHE_PATH=/data/cache/cuda
USER 10001:10001

# ---- onnx: ONNX Runtime only -------------------------------------------------------------------
FROM image AS onnx
COPY --from=deps-onnx /opt/venv /opt/venv
COPY --from=onnx-model-final /opt/soundsift/model /opt/soundsift/model
RUN --mount=type=bind,from=wheel,source=/dist,target=/dist pip install --no-deps /dist/*.whl
ENV SOUNDSIFT_BACKEND=onnx
USER 10001:10001

# ---- cpu (default): CPU PyTorch ----------------------------------------------------------------
FROM image AS cpu
COPY --from=deps-cpu /opt/venv /opt/venv
COPY --from=model-final /opt/soundsift/model /opt/soundsift/model
RUN --mount=type=bind,from=wheel,source=/dist,target=/dist pip install --no-deps /dist/*.whl
ENV SOUNDSIFT_BACKEND=torch
USER 10001:10001

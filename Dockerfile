# syntax=docker/dockerfile:1
# zhserve images: `docker build --target cpu -t zhserve:cpu .` or `--target gpu -t zhserve:gpu .`
# Serving only (no torch, no training dependencies); the bundled models are inside.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm
ARG CUDA_IMAGE=nvidia/cuda:13.0.1-cudnn-runtime-ubuntu24.04

# ---- build: wheels for the package and its serving dependencies ----------------------------
FROM ${PYTHON_IMAGE} AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY app ./app
COPY training ./training
COPY bench ./bench
ARG EXTRA=cpu,png
RUN pip wheel --no-cache-dir --wheel-dir /wheels ".[${EXTRA}]"

# ---- cpu: python slim + onnxruntime ---------------------------------------------------------
FROM ${PYTHON_IMAGE} AS cpu
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir --no-index /wheels/*.whl && rm -rf /wheels \
    && useradd --create-home --uid 10001 zhserve
COPY --chown=10001:10001 models /srv/models
USER 10001
ENV ZHSERVE_MODELS=/srv/models ZHSERVE_HOST=0.0.0.0 ZHSERVE_PORT=8000 PYTHONUNBUFFERED=1
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=3s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=2)"]
CMD ["zhserve", "serve"]

# ---- gpu: CUDA 13 + cuDNN 9 runtime + onnxruntime-gpu ---------------------------------------
FROM ${CUDA_IMAGE} AS gpu
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3=3.12.* python3-venv=3.12.* \
    && rm -rf /var/lib/apt/lists/* \
    && python3 -m venv /opt/zhserve \
    && useradd --create-home --uid 10001 zhserve
ENV PATH=/opt/zhserve/bin:$PATH
WORKDIR /src
COPY pyproject.toml README.md ./
COPY app ./app
COPY training ./training
COPY bench ./bench
# hadolint ignore=DL3013
RUN pip install --no-cache-dir ".[gpu,png]" && rm -rf /src
WORKDIR /
COPY --chown=10001:10001 models /srv/models
USER 10001
ENV ZHSERVE_MODELS=/srv/models ZHSERVE_HOST=0.0.0.0 ZHSERVE_PORT=8000 ZHSERVE_DEVICE=auto PYTHONUNBUFFERED=1
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=3s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=2)"]
CMD ["zhserve", "serve"]

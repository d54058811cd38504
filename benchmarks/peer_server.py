"""WhisperLive's TranscriptionServer with its faster_whisper backend and a local model.

Run by benchmarks/capacity.py with benchmarks/.peer-venv/bin/python (see peer_setup.sh), never with
the project's venv. OMP_NUM_THREADS (set by the caller; 1 by default) bounds CTranslate2's
threads per model, since WhisperLive creates its models with ``cpu_threads=0`` (CTranslate2's
default, which follows OMP_NUM_THREADS).

    python benchmarks/peer_server.py PORT MODEL_FOLDER MAX_CLIENTS [--single-model]
"""

import logging
import sys

from whisper_live.server import TranscriptionServer


def main() -> None:
    port, model, max_clients = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
    logging.basicConfig(level=logging.WARNING)
    print(f"whisper-live peer on {port}, model {model}, max_clients {max_clients}", flush=True)
    TranscriptionServer().run(
        "127.0.0.1",
        port=port,
        backend="faster_whisper",
        faster_whisper_custom_model_path=model,
        single_model="--single-model" in sys.argv[4:],
        max_clients=max_clients,
        max_connection_time=3600,
    )


if __name__ == "__main__":
    main()

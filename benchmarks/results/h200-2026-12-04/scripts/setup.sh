# device call 1: install the wheels (ctranslate2 and what the stack imports) into /tmp/site; look at CUDA
set -u
export PYTHONUNBUFFERED=1
python3 --version; nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .gpu1/whl/*.whl 2>&1 | tail -3
ls /tmp/site | head -40
echo "--- cuBLAS libraries on this machine"
find / -xdev \( -name 'libcublas.so*' -o -name 'libcublasLt.so*' \) 2>/dev/null | head -20
python3 -c "import aiohttp, uvloop, numpy, tokenizers, huggingface_hub, prometheus_client; print('aiohttp', aiohttp.__version__, 'uvloop', uvloop.__version__, 'numpy', numpy.__version__, 'tokenizers', tokenizers.__version__)"
PYTHONPATH=/tmp/site python3 -c "import ctranslate2; print('ctranslate2', ctranslate2.__version__, 'cuda devices', ctranslate2.get_cuda_device_count()); print(ctranslate2.get_supported_compute_types('cuda'))"

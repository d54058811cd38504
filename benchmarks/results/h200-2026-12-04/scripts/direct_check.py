"""device check, step 1: the ASR worker's own Transcriber on the GPU: wall and process CPU per decode
of 22 s of speech, one at a time and four at once (the default GPU pool's slots)."""
import os, resource, sys, time, wave
from concurrent.futures import ThreadPoolExecutor
from asr_worker.transcriber import Transcriber
from asr_worker.worker import transcriber_options
from common.settings import load

def cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime

with wave.open("tests/data/continuous_22s.wav") as w:
    pcm = w.readframes(w.getnframes())
ct = sys.argv[1]
os.environ.update(ASR_DEVICE="cuda", ASR_COMPUTE_TYPE=ct, ASR_ASR_CONCURRENCY="4")
label = f"{ct}, OPENBLAS_NUM_THREADS={os.environ.get('OPENBLAS_NUM_THREADS')}"
try:
    t = Transcriber(transcriber_options(load()))
    t.transcribe(pcm[:32000 * 3], is_final=True)
    c0, w0 = cpu(), time.perf_counter()
    for _ in range(3):
        r = t.transcribe(pcm, is_final=True)
    print(f"{label}: one at a time: {(time.perf_counter() - w0) / 3 * 1000:.0f} ms wall, "
          f"{(cpu() - c0) / 3 * 1000:.0f} ms CPU per decode: {r.text[:60]!r}", flush=True)
    with ThreadPoolExecutor(4) as ex:
        c0, w0 = cpu(), time.perf_counter()
        list(ex.map(lambda _: t.transcribe(pcm, is_final=True), range(12)))
    print(f"{label}: four at once: {(time.perf_counter() - w0) / 12 * 1000:.0f} ms wall, "
          f"{(cpu() - c0) / 12 * 1000:.0f} ms CPU per decode", flush=True)
    print("WORKS:" + ct)
except Exception as exc:
    print(f"{label}: FAILED {type(exc).__name__}: {exc}", flush=True)
    print("WORKS:none")

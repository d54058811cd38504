// AudioWorklet processor: microphone samples (at the context's rate) -> 16 kHz mono s16le.
// Posts {pcm: ArrayBuffer (100 ms of s16le), level: RMS 0..1} to the main thread.
// Downsampling: two one-pole low-pass stages (cut-off ~7 kHz) against aliasing, then linear
// interpolation at the 16 kHz output positions, carried across the 128-sample render blocks.

const TARGET_RATE = 16000;
const CHUNK_SAMPLES = 1600; // 100 ms at 16 kHz

class PcmCapture extends AudioWorkletProcessor {
  constructor() {
    super();
    this.step = sampleRate / TARGET_RATE; // input samples per output sample
    this.filter = this.step > 1;
    this.alpha = 1 - Math.exp((-2 * Math.PI * 7000) / sampleRate);
    this.lp1 = 0;
    this.lp2 = 0;
    this.t = 0; // position of the next output sample, in input samples from this block's start
    this.prev = 0; // last (filtered) input sample of the previous block
    this.out = new Int16Array(CHUNK_SAMPLES);
    this.n = 0;
    this.sumSquares = 0;
    this.port.onmessage = (event) => {
      if (event.data === "flush") this.flush();
    };
  }

  flush() {
    if (this.n === 0) return;
    const pcm = this.out.slice(0, this.n).buffer;
    const level = Math.sqrt(this.sumSquares / this.n);
    this.port.postMessage({ pcm, level }, [pcm]);
    this.n = 0;
    this.sumSquares = 0;
  }

  process(inputs, outputs) {
    const input = inputs[0];
    if (!input || input.length === 0 || !input[0]) return true;
    const raw = input[0];
    const x = new Float32Array(raw.length);
    for (let i = 0; i < raw.length; i++) {
      let s = raw[i];
      if (this.filter) {
        this.lp1 += this.alpha * (s - this.lp1);
        this.lp2 += this.alpha * (this.lp1 - this.lp2);
        s = this.lp2;
      }
      x[i] = s;
    }
    const len = x.length;
    while (this.t < len - 1) {
      const i0 = Math.floor(this.t);
      const frac = this.t - i0;
      const s0 = i0 < 0 ? this.prev : x[i0];
      const s1 = x[i0 + 1];
      let v = s0 + (s1 - s0) * frac;
      v = Math.max(-1, Math.min(1, v));
      this.out[this.n++] = v < 0 ? v * 0x8000 : v * 0x7fff;
      this.sumSquares += v * v;
      if (this.n === CHUNK_SAMPLES) this.flush();
      this.t += this.step;
    }
    this.t -= len;
    this.prev = x[len - 1];
    // Outputs stay silent: the node is connected only so the graph keeps pulling it.
    void outputs;
    return true;
  }
}

registerProcessor("pcm-capture", PcmCapture);

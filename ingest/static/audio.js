// Audio sources for the demo page. Each calls onChunk(ArrayBuffer of 16 kHz s16le mono, 100 ms)
// and onLevel(0..1) and returns an object with stop().

export const RATE = 16000;
const CHUNK_SAMPLES = 1600; // 100 ms

// A context at 16 kHz where the browser can resample the microphone itself (its resampler is
// better than ours); otherwise at the device rate, and the worklet converts.
function newContext() {
  try {
    return new AudioContext({ sampleRate: RATE });
  } catch {
    return new AudioContext();
  }
}

// The microphone, through the AudioWorklet in pcm-worklet.js.
export async function startMicrophone(onChunk, onLevel) {
  // Whisper copes with noise better than with the artefacts of browser noise suppression.
  const stream = await navigator.mediaDevices.getUserMedia({
    audio: { channelCount: 1, echoCancellation: false, noiseSuppression: false, autoGainControl: true },
  });
  const context = newContext();
  try {
    await context.audioWorklet.addModule("/static/pcm-worklet.js");
    const source = context.createMediaStreamSource(stream);
    const node = new AudioWorkletNode(context, "pcm-capture", { numberOfInputs: 1, numberOfOutputs: 1 });
    const mute = context.createGain();
    mute.gain.value = 0;
    node.port.onmessage = (event) => {
      onLevel(event.data.level);
      onChunk(event.data.pcm);
    };
    source.connect(node).connect(mute).connect(context.destination);
    if (context.state !== "running") await context.resume();
    return {
      async stop() {
        node.port.postMessage("flush");
        await new Promise((resolve) => setTimeout(resolve, 50));
        stream.getTracks().forEach((track) => track.stop());
        source.disconnect();
        node.disconnect();
        await context.close();
      },
    };
  } catch (error) {
    stream.getTracks().forEach((track) => track.stop());
    await context.close();
    throw error;
  }
}

// A local audio file: decoded by the browser, mixed to mono and resampled to 16 kHz.
export async function decodeFile(file) {
  const data = await file.arrayBuffer();
  const probe = new AudioContext();
  let decoded;
  try {
    decoded = await probe.decodeAudioData(data);
  } finally {
    await probe.close();
  }
  const frames = Math.ceil(decoded.duration * RATE);
  const offline = new OfflineAudioContext(1, frames, RATE);
  const source = offline.createBufferSource();
  source.buffer = decoded;
  source.connect(offline.destination);
  source.start();
  const rendered = (await offline.startRendering()).getChannelData(0);
  const pcm = new Int16Array(rendered.length);
  for (let i = 0; i < rendered.length; i++) {
    const v = Math.max(-1, Math.min(1, rendered[i]));
    pcm[i] = v < 0 ? v * 0x8000 : v * 0x7fff;
  }
  return pcm;
}

// Sends decoded PCM at the pace it is spoken (timer corrected against the clock); onDone at the end.
export function playPcm(pcm, onChunk, onLevel, onDone) {
  let index = 0;
  let timer = null;
  const started = performance.now();
  const tick = () => {
    const due = Math.floor(((performance.now() - started) / 1000) * RATE) + CHUNK_SAMPLES;
    while (index < pcm.length && index < due) {
      const chunk = pcm.slice(index, index + CHUNK_SAMPLES);
      index += chunk.length;
      let sum = 0;
      for (let i = 0; i < chunk.length; i++) sum += (chunk[i] / 0x8000) ** 2;
      onLevel(Math.sqrt(sum / chunk.length));
      onChunk(chunk.buffer);
    }
    if (index >= pcm.length) {
      timer = null;
      onDone();
      return;
    }
    timer = setTimeout(tick, 50);
  };
  tick();
  return {
    async stop() {
      if (timer !== null) clearTimeout(timer);
      timer = null;
    },
  };
}

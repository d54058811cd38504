// The live-caption demo: microphone or file -> /v1/stream -> captions on the page.

import { decodeFile, playPcm, startMicrophone } from "./audio.js";
import { StreamClient } from "./client.js";
import { CaptionView, setUpDownloads, setUpReadability, showState } from "./ui.js";

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
const scheme = location.protocol === "https:" ? "wss:" : "ws:";
const key = params.get("key");
const streamUrl = `${scheme}//${location.host}/v1/stream${key ? `?token=${encodeURIComponent(key)}` : ""}`;

const view = new CaptionView($("finals"), $("partial"));
const status = $("status");
const micButton = $("mic");
const fileInput = $("file");
const stopButton = $("stop");
const banner = $("banner");
const bannerText = $("banner-text");
const reconnectButton = $("reconnect");
const level = $("level");
let client = null;
let source = null; // what feeds audio: microphone or file player

function setLevel(value) {
  level.value = Math.min(1, value * 4); // speech RMS rarely exceeds 0.25
}

function onState(state, text) {
  showState(status, state, text);
  const unstable = state === "unstable" || state === "failed" || state === "capacity";
  banner.hidden = !unstable;
  bannerText.textContent = text;
  reconnectButton.hidden = state !== "unstable";
  if (state === "unstable") reconnectButton.focus();
  if (state === "capacity" || state === "failed" || state === "ended") stopSource();
  updateButtons();
}

function updateButtons() {
  const running = source !== null;
  micButton.setAttribute("aria-pressed", String(running && source.kind === "mic"));
  micButton.textContent = running && source.kind === "mic" ? "Stop microphone" : "Start microphone";
  micButton.disabled = running && source.kind !== "mic";
  fileInput.disabled = running;
  stopButton.disabled = !running;
}

function newClient() {
  client = new StreamClient(streamUrl, {
    onState,
    onStarted(session) {
      view.reset();
      const link = `${location.origin}/viewer?session=${encodeURIComponent(session.id)}`
        + `&token=${encodeURIComponent(session.viewerToken)}`;
      $("share-link").href = link;
      $("share-link").textContent = link;
      $("share").hidden = false;
    },
    onTranscript(msg) {
      view.show(msg);
    },
    onRevision(msg) {
      view.revise(msg);
    },
    onEnded() {
      view.clearPartial();
    },
    onError(msg) {
      if (msg.code !== "CAPACITY" && msg.code !== "RESUME_FAILED") $("notice").textContent = msg.message;
    },
  });
  client.start();
}

async function stopSource() {
  const running = source;
  source = null;
  setLevel(0);
  updateButtons();
  if (running) await running.stop();
}

async function finish() {
  await stopSource();
  if (client) client.end();
}

micButton.addEventListener("click", async () => {
  if (source && source.kind === "mic") return finish();
  newClient();
  try {
    const mic = await startMicrophone((pcm) => client.send(pcm), setLevel);
    source = { kind: "mic", stop: () => mic.stop() };
  } catch (error) {
    $("notice").textContent = `Microphone unavailable: ${error.message}`;
    client.close();
  }
  updateButtons();
});

fileInput.addEventListener("change", async () => {
  const file = fileInput.files[0];
  if (!file) return;
  let pcm;
  try {
    pcm = await decodeFile(file);
  } catch (error) {
    $("notice").textContent = `Could not decode ${file.name}: ${error.message}`;
    return;
  }
  newClient();
  const player = playPcm(pcm, (chunk) => client.send(chunk), setLevel, () => finish());
  source = { kind: "file", stop: () => player.stop() };
  updateButtons();
});

stopButton.addEventListener("click", () => finish());
reconnectButton.addEventListener("click", () => client && client.reconnect());
$("copy").addEventListener("click", async () => {
  await navigator.clipboard.writeText($("share-link").href);
  $("copy").textContent = "Copied";
});

setUpReadability($("smaller"), $("larger"), $("contrast"), $("size"));
setUpDownloads(view, { txt: $("dl-txt"), srt: $("dl-srt"), vtt: $("dl-vtt") }, () => "captions");
showState(status, "idle", "Not connected");
updateButtons();
window.captionsDemo = { view, get client() { return client; } }; // for tests and the console

// The read-only caption view: /viewer?session=ID&token=VIEWER_TOKEN[&partials=0]
// Joins /v1/sessions/ID/captions; a late joiner first gets the session's recent finals.

import { CaptionView, setUpDownloads, setUpReadability, showState } from "./ui.js";

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
const session = params.get("session") ?? "";
const token = params.get("token") ?? "";
const partials = params.get("partials") !== "0";
const scheme = location.protocol === "https:" ? "wss:" : "ws:";
const url = `${scheme}//${location.host}/v1/sessions/${encodeURIComponent(session)}/captions`
  + `?token=${encodeURIComponent(token)}${partials ? "&partials=1" : ""}`;

const view = new CaptionView($("finals"), $("partial"));
const status = $("status");
const banner = $("banner");
const reconnectButton = $("reconnect");
let ws = null;

function problem(state, text, canRetry) {
  showState(status, state, text);
  $("banner-text").textContent = text;
  banner.hidden = false;
  reconnectButton.hidden = !canRetry;
  if (canRetry) reconnectButton.focus();
}

function connect() {
  banner.hidden = true;
  showState(status, "connecting", "Connecting…");
  let opened = false;
  let refused = null;
  const socket = new WebSocket(url);
  ws = socket;
  socket.onopen = () => {
    opened = true;
    showState(status, "live", "Live");
  };
  socket.onmessage = (event) => {
    const msg = JSON.parse(event.data);
    if (msg.type === "transcript") view.show(msg);
    else if (msg.type === "revision") view.revise(msg);
    else if (msg.type === "session_ended") {
      view.clearPartial();
      showState(status, "ended", "The speaker's session has ended");
    } else if (msg.type === "error") refused = msg;
  };
  socket.onclose = (event) => {
    if (socket !== ws) return;
    if (!opened) return problem("failed", "Could not open these captions: the link is invalid or has expired.", true);
    if (event.code === 1013 || refused?.code === "CAPACITY") {
      return problem("capacity", "Live captions temporarily unavailable", true);
    }
    if (status.dataset.state === "ended") return;
    problem("unstable", "Connection unstable. Reconnect?", true);
  };
}

reconnectButton.addEventListener("click", connect);
setUpReadability($("smaller"), $("larger"), $("contrast"), $("size"));
setUpDownloads(view, { txt: $("dl-txt"), srt: $("dl-srt"), vtt: $("dl-vtt") }, () => `captions-${session.slice(0, 8)}`);
if (!session || !token) problem("failed", "This captions link is incomplete: it needs session and token.", false);
else connect();
window.captionsViewer = { view };

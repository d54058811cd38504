// The client contract of docs/protocol.md for a browser: one session, resumed after a drop so
// that no final is lost. Audio is kept (bounded) until the edge has it, and resent from the
// byte offset the edge reports in session_recovered.

const KEEP_AUDIO_BYTES = 120 * 16000 * 2; // audio held for a resend: two minutes at 16 kHz

export class StreamClient {
  // handlers: {onState(state, detail), onStarted(session), onTranscript(msg), onRevision(msg), onEnded(msg),
  // onError(msg)}
  constructor(url, handlers) {
    this.url = url;
    this.h = handlers;
    this.ws = null;
    this.session = null; // {id, resumeToken, viewerToken} of the first session_started
    this.lastSeq = 0;
    this.state = "idle";
    this.offset = 0; // bytes of audio given to send()
    this.kept = []; // [{start, buf}] audio not known to be held by the edge, oldest first
    this.keptBytes = 0;
    this.live = false; // audio flows straight to the socket
    this.ending = false;
  }

  setState(state, detail = "") {
    this.state = state;
    this.h.onState(state, detail);
  }

  start() {
    this.open(false);
  }

  reconnect() {
    if (!this.session) return this.start();
    this.open(true);
  }

  open(resume) {
    this.live = false;
    this.setState("connecting", resume ? "Reconnecting…" : "Connecting…");
    const ws = new WebSocket(this.url);
    ws.binaryType = "arraybuffer";
    this.ws = ws;
    let greeted = false;
    ws.onmessage = (event) => {
      if (ws !== this.ws || typeof event.data !== "string") return;
      const msg = JSON.parse(event.data);
      if (msg.type === "session_started" && !greeted) {
        greeted = true;
        if (resume) {
          ws.send(JSON.stringify({
            type: "reconnect", previous_session_id: this.session.id,
            resume_token: this.session.resumeToken, last_seq: this.lastSeq,
          }));
        } else {
          this.session = { id: msg.session_id, resumeToken: msg.resume_token, viewerToken: msg.viewer_token };
          this.h.onStarted(this.session);
          this.goLive(0);
        }
      } else if (msg.type === "session_recovered") {
        this.goLive(msg.previous_metrics.audio_bytes_received);
      } else if (msg.type === "transcript") {
        if (msg.is_final) {
          if (msg.seq <= this.lastSeq) return;
          this.lastSeq = msg.seq;
        }
        this.h.onTranscript(msg);
      } else if (msg.type === "revision") {
        this.h.onRevision(msg);
      } else if (msg.type === "session_ended") {
        this.h.onEnded(msg);
      } else if (msg.type === "error") {
        if (msg.code === "CAPACITY") {
          this.setState("capacity", "Live captions temporarily unavailable");
        } else if (msg.code === "RESUME_FAILED") {
          this.setState("failed", `Could not resume: ${msg.message}`);
          ws.close(1000);
        }
        this.h.onError(msg);
      }
    };
    ws.onclose = (event) => {
      if (ws !== this.ws) return;
      this.live = false;
      if (this.state === "capacity" || this.state === "failed") return;
      if (event.code === 1013) return this.setState("capacity", "Live captions temporarily unavailable");
      if (this.ending && event.code === 1000) return this.setState("ended", "Session ended");
      this.setState("unstable", "Connection unstable. Reconnect?");
    };
  }

  // The edge holds the session's first `held` bytes: resend what it lacks, then stream live.
  goLive(held) {
    while (this.kept.length && this.kept[0].start + this.kept[0].buf.byteLength <= held) {
      this.keptBytes -= this.kept.shift().buf.byteLength;
    }
    for (const { start, buf } of this.kept) {
      this.ws.send(start >= held ? buf : buf.slice(held - start));
    }
    this.live = true;
    this.setState("live", "Live");
    if (this.ending) this.ws.send(JSON.stringify({ type: "end" }));
  }

  send(buf) {
    this.kept.push({ start: this.offset, buf });
    this.offset += buf.byteLength;
    this.keptBytes += buf.byteLength;
    while (this.keptBytes > KEEP_AUDIO_BYTES) this.keptBytes -= this.kept.shift().buf.byteLength;
    if (this.live && this.ws.readyState === WebSocket.OPEN) this.ws.send(buf);
  }

  // No more audio: the edge flushes the last finals, sends session_ended and closes.
  end() {
    this.ending = true;
    if (this.live && this.ws.readyState === WebSocket.OPEN) this.ws.send(JSON.stringify({ type: "end" }));
  }

  close() {
    if (this.ws) {
      const ws = this.ws;
      this.ws = null;
      ws.close(1000);
    }
    this.setState("idle", "Not connected");
  }
}

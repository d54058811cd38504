// The transcript a page shows: finals by seq (no duplicates, in order), exported as text, SRT, VTT.

export class Transcript {
  constructor() {
    this.finals = []; // {seq, text, start_s, end_s}
  }

  get lastSeq() {
    return this.finals.length ? this.finals[this.finals.length - 1].seq : 0;
  }

  // Adds a final message; returns false when its seq was already shown (replay after a resume).
  add(msg) {
    if (msg.seq <= this.lastSeq) return false;
    this.finals.push({ seq: msg.seq, text: msg.text, start_s: msg.start_s, end_s: msg.end_s });
    return true;
  }

  // Applies a `revision` message (the final's text decoded again); returns false when that final
  // is not here or already reads so.
  revise(msg) {
    const final = this.finals.find((f) => f.seq === msg.seq);
    if (!final || final.text === msg.text) return false;
    final.text = msg.text;
    return true;
  }

  toText() {
    return this.finals.map((f) => f.text).join("\n") + (this.finals.length ? "\n" : "");
  }

  toSrt() {
    return this.finals
      .map((f, i) => `${i + 1}\n${stamp(f.start_s, ",")} --> ${stamp(f.end_s, ",")}\n${f.text}\n`)
      .join("\n");
  }

  toVtt() {
    const cues = this.finals.map((f) => `${stamp(f.start_s, ".")} --> ${stamp(f.end_s, ".")}\n${f.text}\n`);
    return ["WEBVTT\n", ...cues].join("\n");
  }
}

// 3725.5 -> "01:02:05,500" (SRT) or "01:02:05.500" (VTT).
export function stamp(seconds, separator) {
  const ms = Math.max(0, Math.round(seconds * 1000));
  const pad = (n, width) => String(n).padStart(width, "0");
  const h = Math.floor(ms / 3600000);
  const m = Math.floor((ms % 3600000) / 60000);
  const s = Math.floor((ms % 60000) / 1000);
  return `${pad(h, 2)}:${pad(m, 2)}:${pad(s, 2)}${separator}${pad(ms % 1000, 3)}`;
}

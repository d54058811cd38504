// What the demo page and the viewer page share: the caption view (finals appended, the partial
// greyed and replaced in place), font size and contrast controls, transcript downloads.

import { Transcript } from "./transcript.js";

export class CaptionView {
  constructor(finalsList, partialLine) {
    this.finalsList = finalsList;
    this.partialLine = partialLine;
    this.transcript = new Transcript();
    this.partialUtterance = null;
  }

  show(msg) {
    if (!msg.is_final) {
      this.partialUtterance = msg.utterance_id;
      this.partialLine.textContent = msg.text;
      return;
    }
    if (!this.transcript.add(msg)) return;
    const item = document.createElement("li");
    item.dataset.seq = String(msg.seq);
    item.textContent = msg.text;
    this.finalsList.append(item);
    if (this.partialUtterance === msg.utterance_id || this.partialUtterance === null) {
      this.partialLine.textContent = "";
      this.partialUtterance = null;
    }
    item.scrollIntoView({ block: "nearest" });
  }

  // A `revision`: the final it names is shown (and downloaded) with its new text.
  revise(msg) {
    if (!this.transcript.revise(msg)) return;
    const item = this.finalsList.querySelector(`li[data-seq="${msg.seq}"]`);
    if (item) item.textContent = msg.text;
  }

  // A new session: its finals are numbered from 1 again, so the view starts empty.
  reset() {
    this.transcript = new Transcript();
    this.finalsList.replaceChildren();
    this.clearPartial();
  }

  clearPartial() {
    this.partialLine.textContent = "";
    this.partialUtterance = null;
  }
}

const FONT_SIZES = [1, 1.25, 1.5, 2, 2.5, 3]; // rem
const FONT_KEY = "captions.fontSize";
const CONTRAST_KEY = "captions.highContrast";

export function setUpReadability(smaller, larger, contrast, sizeLabel) {
  let index = Number(localStorage.getItem(FONT_KEY) ?? 2);
  if (!(index >= 0 && index < FONT_SIZES.length)) index = 2;
  const apply = () => {
    document.documentElement.style.setProperty("--caption-size", `${FONT_SIZES[index]}rem`);
    sizeLabel.textContent = `${Math.round(FONT_SIZES[index] * 100)}%`;
    smaller.disabled = index === 0;
    larger.disabled = index === FONT_SIZES.length - 1;
    localStorage.setItem(FONT_KEY, String(index));
  };
  smaller.addEventListener("click", () => { index = Math.max(0, index - 1); apply(); });
  larger.addEventListener("click", () => { index = Math.min(FONT_SIZES.length - 1, index + 1); apply(); });
  apply();
  const setContrast = (on) => {
    document.body.classList.toggle("high-contrast", on);
    contrast.setAttribute("aria-pressed", String(on));
    localStorage.setItem(CONTRAST_KEY, on ? "1" : "0");
  };
  contrast.addEventListener("click", () => setContrast(contrast.getAttribute("aria-pressed") !== "true"));
  setContrast(localStorage.getItem(CONTRAST_KEY) === "1");
}

export function setUpDownloads(view, buttons, baseName) {
  const kinds = {
    txt: ["text/plain", () => view.transcript.toText()],
    srt: ["application/x-subrip", () => view.transcript.toSrt()],
    vtt: ["text/vtt", () => view.transcript.toVtt()],
  };
  for (const [kind, button] of Object.entries(buttons)) {
    button.addEventListener("click", () => {
      const [type, make] = kinds[kind];
      const url = URL.createObjectURL(new Blob([make()], { type }));
      const link = document.createElement("a");
      link.href = url;
      link.download = `${baseName()}.${kind}`;
      document.body.append(link);
      link.click();
      link.remove();
      setTimeout(() => URL.revokeObjectURL(url), 1000);
    });
  }
}

export function showState(element, state, text) {
  element.dataset.state = state;
  element.textContent = text;
}

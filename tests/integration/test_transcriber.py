"""The transcriber on the real bundled tiny.en model and real speech."""

import re
import wave
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import jiwer
import numpy as np
import pytest

from asr_worker.transcriber import (
    ModelLoadError,
    Transcriber,
    TranscriberOptions,
    resolve_model_path,
)
from vad_worker.vad_settings import VadSettings

DATA = Path(__file__).parent.parent / "data"
ONE_SENTENCE = "We will meet at the train station at noon."
THREE_UTTERANCES = (
    "Please call me back tomorrow morning. We will meet at the train station at noon. "
    "Open the window and let the fresh air in."
)
MAX_WER = 0.25


def read_pcm(name: str) -> bytes:
    with wave.open(str(DATA / name), "rb") as wav:
        assert (wav.getframerate(), wav.getnchannels(), wav.getsampwidth()) == (16000, 1, 2)
        return wav.readframes(wav.getnframes())


def words(text: str) -> str:
    return " ".join(re.sub(r"[^\w\s']", " ", text.lower()).split())


def wer(reference: str, hypothesis: str) -> float:
    return float(jiwer.wer(words(reference), words(hypothesis)))


@pytest.fixture(scope="module")
def transcriber() -> Transcriber:
    return Transcriber(TranscriberOptions(cpu_threads=1))


@pytest.mark.parametrize("is_final", [True, False])
def test_one_sentence(transcriber: Transcriber, is_final: bool):
    pcm = read_pcm("one_sentence.wav")
    result = transcriber.transcribe(pcm, is_final=is_final)
    assert wer(ONE_SENTENCE, result.text) <= MAX_WER, result
    assert result.raw_text == result.text
    assert result.audio_s == pytest.approx(len(pcm) / 32000)
    assert 0 < result.inference_s < 30
    assert result.language == "en"


def test_three_utterances(transcriber: Transcriber):
    result = transcriber.transcribe(read_pcm("three_utterances.wav"), is_final=True)
    assert wer(THREE_UTTERANCES, result.text) <= MAX_WER, result


def test_prompt_is_accepted(transcriber: Transcriber):
    result = transcriber.transcribe(
        read_pcm("one_sentence.wav"), is_final=True, prompt="Meeting notes about travel plans."
    )
    assert wer(ONE_SENTENCE, result.text) <= MAX_WER, result


def _utterances() -> list[bytes]:
    """The three utterances of three_utterances.wav as the VAD worker cuts them."""
    from common.settings import Settings
    from vad_worker.segmenter import FinalReady
    from vad_worker.seq_order import Chunk
    from vad_worker.session import SessionVad, segmenter_options

    pcm = read_pcm("three_utterances.wav")
    vad = SessionVad("t", segmenter_options(VadSettings.from_settings(Settings())), 2)
    events = vad.process([Chunk(1, "audio", pcm), Chunk(2, "end", b"")])
    return [e.audio for e in events if isinstance(e, FinalReady)]


SENTENCES = [s.strip() + "." for s in THREE_UTTERANCES.split(".") if s.strip()]


def test_words_of_the_context_are_not_repeated(transcriber: Transcriber):
    """A final decoded after the previous utterance's audio gives its own words only."""
    first, second, third = _utterances()
    for context, pcm, sentence in ((first, second, SENTENCES[1]), (second, third, SENTENCES[2]),
                                   (first + second, third, SENTENCES[2])):
        result = transcriber.transcribe(pcm, is_final=True, context=context)
        assert wer(sentence, result.text) <= MAX_WER, (sentence, result)
        assert result.audio_s == pytest.approx(len(pcm) / 32000)


def test_with_context_word_times_are_the_utterances_own():
    transcriber = Transcriber(TranscriberOptions(cpu_threads=1, word_timestamps=True))
    first, second, _ = _utterances()
    result = transcriber.transcribe(second, is_final=True, context=first)
    assert [w.word for w in result.words] == result.text.split()
    assert all(-0.1 <= w.start_s <= w.end_s <= len(second) / 32000 + 0.1 for w in result.words), result.words


def test_a_silent_context_falls_back_to_the_utterance_alone(transcriber: Transcriber):
    """Context is optional help: silence before the words, or context too short to align, gives
    the same words as no context."""
    _, second, _ = _utterances()
    for context in (bytes(3 * 32000), bytes(1000)):
        result = transcriber.transcribe(second, is_final=True, context=context)
        assert wer(SENTENCES[1], result.text) <= MAX_WER, result
    partial = transcriber.transcribe(second, is_final=False, context=bytes(3 * 32000))
    assert wer(SENTENCES[1], partial.text) <= MAX_WER, partial


def test_concurrent_calls_from_threads(transcriber: Transcriber):
    pcm = read_pcm("one_sentence.wav")
    with ThreadPoolExecutor(max_workers=2) as pool:
        results = list(pool.map(lambda final: transcriber.transcribe(pcm, is_final=final), [True, False]))
    for result in results:
        assert wer(ONE_SENTENCE, result.text) <= MAX_WER, result


@pytest.mark.parametrize("is_final", [True, False])
def test_silence_gives_no_text(transcriber: Transcriber, is_final: bool):
    result = transcriber.transcribe(bytes(2 * 16000 * 2), is_final=is_final)
    assert result.text == ""
    assert result.audio_s == pytest.approx(2.0)


@pytest.mark.parametrize("is_final", [True, False])
def test_low_white_noise_gives_no_text(transcriber: Transcriber, is_final: bool):
    rng = np.random.default_rng(1234)
    amplitude = 32768 * 10 ** (-50 / 20)  # RMS of -50 dBFS
    noise = np.clip(rng.normal(0.0, amplitude, 2 * 16000), -32768, 32767).astype("<i2")
    result = transcriber.transcribe(noise.tobytes(), is_final=is_final)
    assert result.text == "", result


def test_very_short_audio_skips_the_model(transcriber: Transcriber):
    result = transcriber.transcribe(bytes(2 * 1000), is_final=True)
    assert (result.text, result.raw_text) == ("", "")
    assert result.audio_s == pytest.approx(1000 / 16000)


def test_missing_model_folder_raises_a_helpful_error(tmp_path: Path):
    missing = str(tmp_path / "no-such-model")
    with pytest.raises(ModelLoadError, match="ASR_MODEL") as info:
        Transcriber(TranscriberOptions(model=missing))
    assert info.value.model == missing
    assert "Nothing is downloaded" in str(info.value)


def test_folder_without_a_model_raises(tmp_path: Path):
    with pytest.raises(ModelLoadError, match=r"model\.bin"):
        Transcriber(TranscriberOptions(model=str(tmp_path)))


def test_uncached_model_name_is_not_downloaded():
    with pytest.raises(ModelLoadError, match="not in the local Hugging Face cache"):
        Transcriber(TranscriberOptions(model="no-such-org/no-such-whisper-model"))


def test_unknown_model_name_raises():
    with pytest.raises(ModelLoadError, match="Invalid model size 'bogus'"):
        Transcriber(TranscriberOptions(model="bogus"))


def test_resolve_model_path():
    assert (Path(resolve_model_path("tiny.en")) / "model.bin").is_file()
    assert resolve_model_path("/models/large-v3") == "/models/large-v3"
    assert resolve_model_path("base.en") == "base.en"


def test_the_asr_worker_refuses_to_start_without_its_model(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if not k.startswith("ASR_")}
    env["ASR_MODEL"] = str(tmp_path / "no-such-model")
    out = subprocess.run([sys.executable, "-m", "asr_worker"], env=env, cwd=tmp_path, capture_output=True,
                         text=True, timeout=60, check=False)
    assert out.returncode == 3
    assert "no-such-model" in out.stderr and "Nothing is downloaded at run time" in out.stderr


def test_the_encoder_hears_the_configured_window_not_whispers_30_s(monkeypatch: pytest.MonkeyPatch):
    from faster_whisper import WhisperModel

    heard: list[int] = []
    encode = WhisperModel.encode

    def spy(self: WhisperModel, features: np.ndarray) -> object:
        heard.append(features.shape[-1])
        return encode(self, features)

    monkeypatch.setattr(WhisperModel, "encode", spy)
    windowed = Transcriber(TranscriberOptions(cpu_threads=1, window_s=15))
    result = windowed.transcribe(read_pcm("three_utterances.wav"), is_final=True)
    assert wer(THREE_UTTERANCES, result.text) <= MAX_WER, result
    assert heard and set(heard) == {1500}, heard  # 15 s of 10 ms mel frames, not faster-whisper's 3000
    heard.clear()
    full = Transcriber(TranscriberOptions(cpu_threads=1)).transcribe(read_pcm("one_sentence.wav"), is_final=False)
    assert wer(ONE_SENTENCE, full.text) <= MAX_WER, full
    assert set(heard) == {3000}, heard


def test_revise_keeps_only_the_words_of_the_first_utterance(transcriber: Transcriber):
    """`revise`: an utterance decoded with the next one after it in the same window gives the
    words of the first one only, none of the next one's."""
    import json

    segments = json.loads((DATA / "accuracy_clips.json").read_text())["continuous_22s"]
    pcm = read_pcm("continuous_22s.wav")
    gap = (segments[1]["start_s"] + segments[0]["end_s"]) / 2  # the pause between sentences 1 and 2
    cut, end = int(gap * 16000) * 2, int((segments[2]["start_s"] + segments[1]["end_s"]) / 2 * 16000) * 2
    first, following = pcm[:cut], pcm[cut:end]
    revised = transcriber.revise(first, following)
    assert wer(segments[0]["text"], revised.text) <= MAX_WER, revised
    assert "coral" not in words(revised.text)  # the next sentence's words stay out
    assert revised.audio_s == pytest.approx(len(first) / 32000)
    assert transcriber.revise(first[:1000], following).text == ""  # too short to decode
    # Cut as VAD cuts (speech end + 30 ms, the pause left out): the next final's text, as the
    # worker passes it, decides straddling words; the words stay those of the first sentence.
    tight = pcm[:int((segments[0]["end_s"] + 0.03) * 16000) * 2]
    after = pcm[int((segments[1]["start_s"] - 0.2) * 16000) * 2:int((segments[1]["end_s"] + 0.03) * 16000) * 2]
    split = transcriber.revise(tight, after, following_text=segments[1]["text"])
    assert wer(segments[0]["text"], split.text) <= MAX_WER, split
    assert "coral" not in words(split.text)
